"""Jobs that keep a drive from only ever growing: block garbage collection and retention."""
