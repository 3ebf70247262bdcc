"""Stream processors: the Faust app and the embedded runner around the pure core."""
