"""The shared Redis layer every embedq process imports (dramatiq's word): the Lua scripts, each a file
in lua/ with its header, and the one loader that calls them (scripts.py)."""
