"""The widgets the terminal UI's screens share: its tables, the status bar and the line chart."""
