"""The terminal UI's screens, one module each; the app imports them, they never import the app."""
