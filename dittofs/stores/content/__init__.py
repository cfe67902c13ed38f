"""Content stores kept on this machine: memory, and files in a directory."""
