"""The emulated kernel: interpreter, Unicorn machine, KASAN shadow, maps, helpers, importers."""
