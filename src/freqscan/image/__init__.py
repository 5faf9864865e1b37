"""Image tagging: RAM++ (open and closed set) and open_clip, behind one `Tagger` interface."""
