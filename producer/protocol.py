"""The serializer's old path, as operators pass it to rq's own tools (`rq info -S
embedq.producer.protocol.MsgpackSerializer`); it lives in embedq.broker.jobs now. Goes in 0.4."""

from embedq.broker.jobs import MsgpackSerializer

__all__ = ["MsgpackSerializer"]
