"""What every layer reads, below all of them: the settings schema (`config`) and the backbone names it checks
(`backbones`), the model summary (`quality`), where files live (`places`) and how they are written whole
(`durable`). Imports nothing else of the engine and loads no torch."""
