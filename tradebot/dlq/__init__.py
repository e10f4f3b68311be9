"""Dead letters as a workflow: list, show, replay and drop (``tradebot dlq``)."""
