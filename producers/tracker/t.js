/*
 * funnel website tracker, served by the collector at /t.js.
 *
 *   <script async src="https://collector.example/t.js" data-key="WRITE_KEY" data-site="shop"></script>
 *
 * Sends touchpoint events (DESIGN §4) in batches to `${endpoint}/v1/batch?key=...`.
 * Plain ES2017, no dependencies, no build step: the collector minifies it (rjsmin) at serve
 * time, so comments cost nothing on the wire. Keep it ES2017: no `?.`, `??`, object spread,
 * `catch {}` or Promise#finally.
 *
 * Delivery contract:
 * - At least once. A batch is retried (same event_ids, the server dedups) on network errors,
 *   5xx and 429, with exponential backoff, jitter and Retry-After, at most 5 attempts; then its
 *   events go back to the front of the in-memory queue for the next flush. Any other 4xx means
 *   the server rejected the data: warned once, never retried.
 * - Unsent events live in memory only, capped at 1000 (oldest dropped, counted in
 *   funnel._dropped). On page exit (pagehide, tab hidden, link navigation) the queue goes out
 *   with sendBeacon, which cannot be retried.
 * - `seq` increases by one per event on this device (localStorage), so the server can order a
 *   device's events regardless of its clock.
 * - Nothing is sent, and no cookie is set, under Do Not Track / Global Privacy Control, after
 *   funnel.optOut(), or while consent is required and not yet given (events are held in memory
 *   until funnel.consent(true); funnel.consent(false) drops them).
 */
(function (window, document, navigator) {
  'use strict';

  var prior = window.funnel;
  if (prior && prior.track) return; // the script is on the page twice: keep the first

  var TYPES = ['impression', 'click', 'lead', 'order', 'payment', 'repeat'];
  var MONEY_TYPES = ['order', 'payment', 'repeat'];
  // Landing parameters carried in every event's context for the rest of the visit.
  var ATTRIBUTION = [
    'utm_source', 'utm_medium', 'utm_campaign', 'utm_term', 'utm_content',
    'gclid', 'fbclid', 'msclkid', 'ttclid', 'li_fat_id', 'twclid', 'yclid'
  ];
  var ID_KEY = '_fnl_id';
  var SEQ_KEY = '_fnl_seq';
  var CUSTOMER_KEY = '_fnl_cid';
  var OPTOUT_KEY = '_fnl_optout';
  var VISIT_KEY = '_fnl_utm';
  var LOCAL = 'localStorage';
  var SESSION = 'sessionStorage';
  var YEAR_SECONDS = 31536000;
  var MAX_QUEUE = 1000;
  var MAX_ATTEMPTS = 5;
  var MAX_PROPERTIES = 50; // the collector's bounds (funnel/events.py)
  var MAX_TEXT = 4000;
  var MAX_EVENTS_PER_REQUEST = 100;
  // sendBeacon and fetch keepalive share a 64 KiB in-flight budget per page.
  var MAX_REQUEST_BYTES = 60000;

  var GRANTED = 1;
  var PENDING = 0;
  var DENIED = -1;

  // ---- small helpers ------------------------------------------------------------------------

  function warn() {
    if (window.console) console.warn.apply(console, ['[funnel]'].concat([].slice.call(arguments)));
  }

  // Storage and cookies throw in sandboxed iframes and with storage disabled: never break the page.
  function getItem(area, key) {
    try {
      return window[area].getItem(key);
    } catch (e) {
      return null;
    }
  }

  function setItem(area, key, value) {
    try {
      if (value == null) window[area].removeItem(key);
      else window[area].setItem(key, value);
    } catch (e) { /* unavailable: the in-memory value still works for this page */ }
  }

  function readCookie(name) {
    try {
      var parts = document.cookie.split('; ');
      for (var i = 0; i < parts.length; i++) {
        if (parts[i].indexOf(name + '=') === 0) return parts[i].slice(name.length + 1);
      }
    } catch (e) { /* cookies unavailable */ }
    return null;
  }

  function writeCookie(name, value) {
    try {
      document.cookie = name + '=' + value + '; Max-Age=' + YEAR_SECONDS + '; Path=/; SameSite=Lax' +
        (location.protocol === 'https:' ? '; Secure' : '');
    } catch (e) { /* cookies unavailable */ }
  }

  // UUID v4. crypto.randomUUID exists only in secure contexts (https, localhost).
  function uuid() {
    var crypto = window.crypto;
    if (crypto.randomUUID) return crypto.randomUUID();
    var b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 15) | 64; // version 4
    b[8] = (b[8] & 63) | 128; // RFC 4122 variant
    var hex = '';
    for (var i = 0; i < 16; i++) {
      hex += (b[i] + 256).toString(16).slice(1) + (i === 3 || i === 5 || i === 7 || i === 9 ? '-' : '');
    }
    return hex;
  }

  function isScalar(value) {
    var type = typeof value;
    return value === null || type === 'string' || type === 'boolean' ||
      (type === 'number' && isFinite(value));
  }

  function utf8Bytes(text) {
    return window.TextEncoder ? new TextEncoder().encode(text).length : text.length * 3;
  }

  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  // ---- configuration ------------------------------------------------------------------------

  // data-* attributes of our own <script> tag; window.funnelConfig (same names, camelCase)
  // overrides them, which is what tests use.
  var script = document.currentScript;
  var config = Object.assign({}, script && script.dataset, window.funnelConfig);

  function number(value, fallback) {
    var n = parseInt(value, 10);
    return n >= 0 ? n : fallback;
  }

  var writeKey = config.key;
  var siteId = config.site;
  var endpoint = String(
    config.endpoint || (script && script.src ? new URL(script.src).origin : location.origin)
  ).replace(/\/+$/, '');
  var batchUrl = endpoint + '/v1/batch?key=' + encodeURIComponent(writeKey);
  var autoImpression = String(config.autoImpression) !== 'false';
  var batchSize = Math.max(1, number(config.batchSize, 10));
  var flushMs = number(config.flushMs, 2000);

  var configured = !!(writeKey && siteId);
  if (!configured) warn('data-key and data-site are required; tracking is off');

  var doNotTrack = navigator.doNotTrack === '1' || window.doNotTrack === '1' ||
    navigator.globalPrivacyControl === true;

  // ---- state --------------------------------------------------------------------------------

  var consentState = String(config.requireConsent) === 'true' ? PENDING : GRANTED;
  var optedOut = getItem(LOCAL, OPTOUT_KEY) === '1';
  var customerId = getItem(LOCAL, CUSTOMER_KEY);
  var anonymousId = null; // resolved on the first released event: no cookie before that
  var deviceReady = false;
  var memorySeq = -1; // keeps seq monotonic when localStorage is unavailable

  var held = []; // events waiting for consent
  var queue = []; // events waiting to be sent
  var timer = 0;
  var draining = null; // the running send loop, shared by concurrent flush() calls
  var retrying = null; // the batch waiting out its backoff (page exit sends it by beacon)

  var visit = landingAttribution();

  function silenced() {
    return !configured || doNotTrack || optedOut;
  }

  function allowed() {
    return !silenced() && consentState === GRANTED;
  }

  // UTM tags and click ids of this landing; a visit without any keeps the session's earlier ones.
  function landingAttribution() {
    var params = new URLSearchParams(location.search);
    var found = {};
    var any = false;
    ATTRIBUTION.forEach(function (name) {
      var value = params.get(name);
      if (value) {
        found[name] = value.slice(0, 500);
        any = true;
      }
    });
    if (any) return { values: found, landed: true };
    try {
      return { values: JSON.parse(getItem(SESSION, VISIT_KEY)) || {}, landed: false };
    } catch (e) {
      return { values: {}, landed: false };
    }
  }

  // First moment we may write: settle the device id, keep the visit's attribution.
  function prepareDevice() {
    if (deviceReady) return;
    deviceReady = true;
    anonymousId = anonymousId || readCookie(ID_KEY) || getItem(LOCAL, ID_KEY) || uuid();
    saveAnonymousId();
    if (visit.landed) setItem(SESSION, VISIT_KEY, JSON.stringify(visit.values));
    if (customerId) setItem(LOCAL, CUSTOMER_KEY, customerId);
  }

  function saveAnonymousId() {
    writeCookie(ID_KEY, anonymousId);
    // Cookies blocked (or refused): fall back to localStorage.
    if (readCookie(ID_KEY) !== anonymousId) setItem(LOCAL, ID_KEY, anonymousId);
  }

  function nextSeq() {
    var stored = number(getItem(LOCAL, SEQ_KEY), -1);
    memorySeq = Math.max(stored, memorySeq) + 1;
    setItem(LOCAL, SEQ_KEY, String(memorySeq));
    return memorySeq;
  }

  // Drop the oldest events beyond the cap, counting them.
  function cap(list) {
    var excess = list.length - MAX_QUEUE;
    if (excess > 0) {
      list.splice(0, excess);
      api._dropped += excess;
    }
  }

  // ---- events -------------------------------------------------------------------------------

  function context() {
    var ctx = Object.assign({}, visit.values, { url: location.href.slice(0, MAX_TEXT) });
    if (document.referrer) ctx.referrer = document.referrer.slice(0, MAX_TEXT);
    return ctx;
  }

  function buildEvent(type, props) {
    var event = {
      event_id: uuid(),
      type: type,
      site_id: siteId,
      occurred_at: new Date().toISOString(),
      context: context(),
      properties: {}
    };
    if (customerId) event.customer_id = customerId;
    var money = MONEY_TYPES.indexOf(type) >= 0;
    var count = 0;
    Object.keys(props).forEach(function (key) {
      var value = props[key];
      if (value === undefined) return;
      if (money && key === 'order_id') {
        event.order_id = String(value);
      } else if (money && key === 'revenue') {
        // Numbers are rounded to the 4 decimals the server accepts (0.1 + 0.2 is not 0.3).
        event.revenue = typeof value === 'number' ? Math.round(value * 1e4) / 1e4 : value;
      } else if (money && key === 'currency') {
        event.currency = String(value).toUpperCase();
      } else if (type === 'lead' && (key === 'form' || key === 'intent')) {
        event.lead = event.lead || {};
        event.lead[key] = String(value).slice(0, 500);
      } else if (isScalar(value) && count < MAX_PROPERTIES) {
        event.properties[key] = typeof value === 'string' ? value.slice(0, MAX_TEXT) : value;
        count++;
      }
    });
    return event;
  }

  // Give the event its device identity and order, and queue it for sending.
  function release(event) {
    prepareDevice();
    event.anonymous_id = anonymousId;
    event.seq = nextSeq();
    queue.push(event);
    cap(queue);
    if (queue.length >= batchSize) {
      if (!draining) flush();
    } else if (!timer) {
      timer = setTimeout(flush, flushMs);
    }
  }

  // ---- transport ----------------------------------------------------------------------------

  // Take events off the front of `list` for one request, within the size budget.
  function takeBatch(list) {
    var bytes = 2;
    var n = 0;
    while (n < list.length && n < MAX_EVENTS_PER_REQUEST) {
      bytes += utf8Bytes(JSON.stringify(list[n])) + 40; // + sent_at
      if (n && bytes > MAX_REQUEST_BYTES) break;
      n++;
    }
    return list.splice(0, n);
  }

  function serialize(batch) {
    var now = new Date().toISOString();
    batch.forEach(function (event) { event.sent_at = now; });
    return JSON.stringify(batch);
  }

  // text/plain makes this a CORS "simple request": no preflight round trip.
  function post(body) {
    return fetch(batchUrl, {
      method: 'POST',
      body: body,
      keepalive: utf8Bytes(body) < MAX_REQUEST_BYTES,
      credentials: 'omit',
      headers: { 'Content-Type': 'text/plain' }
    });
  }

  function backoff(attempt) {
    var base = 1000 * Math.pow(2, attempt - 1); // 1 s, 2 s, 4 s, 8 s
    return base / 2 + Math.random() * base / 2;
  }

  // Send one batch until it is answered. Returns false when the send loop should stop.
  async function deliver(batch) {
    for (var attempt = 1; ; attempt++) {
      var wait = -1;
      try {
        var response = await post(serialize(batch));
        var status = response.status;
        if (status !== 429 && status < 500) {
          // Answered: 200 (maybe partly rejected) or 4xx (rejected: retrying cannot help).
          var answer = await response.json().catch(function () { return {}; });
          if (!response.ok || (answer.rejected && answer.rejected.length)) {
            warn('collector rejected events', status, answer);
          }
          return true;
        }
        var retryAfter = parseFloat(response.headers.get('Retry-After'));
        if (retryAfter >= 0) wait = Math.min(retryAfter, 60) * 1000;
      } catch (e) { /* network error, or a CORS failure: retry */ }
      if (!allowed()) return false; // opted out meanwhile: the events are gone
      if (attempt >= MAX_ATTEMPTS) {
        queue.unshift.apply(queue, batch); // try again on the next flush
        cap(queue);
        return false;
      }
      retrying = batch;
      await sleep(wait >= 0 ? wait : backoff(attempt));
      if (retrying !== batch) return true; // page exit sent it by beacon meanwhile
      retrying = null;
    }
  }

  async function drain() {
    while (queue.length && allowed()) {
      if (!(await deliver(takeBatch(queue)))) return false;
    }
    return true;
  }

  /** Send everything queued; resolves true once the queue is delivered, false if it gave up. */
  function flush() {
    clearTimeout(timer);
    timer = 0;
    if (!allowed()) return Promise.resolve(false);
    if (draining) {
      // A send is running: wait for it, then send what arrived since.
      return draining.then(function (ok) { return ok && queue.length ? flush() : ok; });
    }
    var done = function (ok) {
      draining = null;
      if (ok && queue.length && !timer) timer = setTimeout(flush, flushMs);
      return ok;
    };
    draining = drain().then(done, function () { return done(false); });
    return draining;
  }

  // Page exit: hand everything to the browser now. A beacon cannot be awaited or retried.
  function flushOnExit() {
    clearTimeout(timer);
    timer = 0;
    if (!allowed()) return;
    if (retrying) {
      queue.unshift.apply(queue, retrying);
      retrying = null;
    }
    while (queue.length) {
      var body = serialize(takeBatch(queue));
      var queued = false;
      try {
        queued = navigator.sendBeacon(batchUrl, new Blob([body], { type: 'text/plain' }));
      } catch (e) { /* no sendBeacon */ }
      if (!queued) post(body).catch(function () {});
    }
  }

  // ---- public API ---------------------------------------------------------------------------

  function track(type, props) {
    if (TYPES.indexOf(type) < 0) {
      warn('unknown event type ignored:', type);
      return;
    }
    if (silenced() || consentState === DENIED) return;
    var event = buildEvent(type, props || {});
    if (consentState === PENDING) {
      held.push(event);
      cap(held);
    } else {
      release(event);
    }
  }

  function identify(id) {
    if (id == null || id === '') return;
    customerId = String(id);
    if (allowed()) {
      prepareDevice();
      setItem(LOCAL, CUSTOMER_KEY, customerId);
    }
  }

  function consent(granted) {
    var waiting = held;
    held = [];
    if (granted) {
      consentState = GRANTED;
      if (!silenced()) waiting.forEach(release);
    } else {
      consentState = DENIED;
      queue.length = 0;
    }
  }

  function optOut() {
    optedOut = true;
    setItem(LOCAL, OPTOUT_KEY, '1');
    held = [];
    queue.length = 0;
    retrying = null;
    clearTimeout(timer);
    timer = 0;
  }

  function optIn() {
    optedOut = false;
    setItem(LOCAL, OPTOUT_KEY, null);
  }

  // A new person on this device: fresh anonymous id, no customer id.
  function reset() {
    anonymousId = uuid();
    customerId = null;
    setItem(LOCAL, CUSTOMER_KEY, null);
    if (deviceReady) saveAnonymousId();
  }

  // The snippet's queue format, also accepted after load: funnel.push(['track', 'lead', {...}]).
  function push(call) {
    var method = call && api[call[0]];
    if (typeof method === 'function') method.apply(api, [].slice.call(call, 1));
  }

  var api = {
    identify: identify,
    track: track,
    consent: consent,
    optOut: optOut,
    optIn: optIn,
    flush: flush,
    reset: reset,
    push: push,
    _dropped: 0
  };
  window.funnel = api;

  // Calls made before the script loaded (identify, consent, ...) apply before the page view.
  if (Array.isArray(prior)) prior.forEach(push);
  if (autoImpression) track('impression');

  // Clicks on [data-funnel-click] (or inside one). Capture phase: a handler that stops
  // propagation must not hide the click from us.
  document.addEventListener('click', function (e) {
    var target = e.target;
    var el = target && target.closest && target.closest('[data-funnel-click]');
    if (!el) return;
    var link = target.closest('a[href]');
    var props = {
      label: (el.getAttribute('data-funnel-click') || el.textContent || '')
        .replace(/\s+/g, ' ').trim().slice(0, 100)
    };
    var href = link && typeof link.href === 'string' ? link.href : '';
    if (href) props.href = href;
    track('click', props);
    // Leaving the page: a fetch could be cancelled by the navigation, a beacon is not.
    if (href && !(link.hash && href.split('#')[0] === location.href.split('#')[0])) flushOnExit();
  }, true);

  document.addEventListener('visibilitychange', function () {
    if (document.visibilityState === 'hidden') flushOnExit();
  });
  window.addEventListener('pagehide', flushOnExit);
})(window, document, navigator);
