"""`embedq serve`: a stateless HTTP front door on the queue in OpenAI's shape. It runs no model: it
enqueues, waits and answers; replicas share nothing but Redis. Needs `embedq[gateway]`."""
