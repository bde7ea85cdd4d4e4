"""embedq.producer: the enqueue side, what a web app runs (no onnxruntime). Its public names are
re-exported by the `embedq` package itself: `from embedq import EmbedClient`."""
