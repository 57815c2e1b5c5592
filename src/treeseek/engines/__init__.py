"""External search engines that serve treeseek's rankings as inner-product search (see ``vectors``)."""
from .vectors import ENGINE_METHODS, ItemBatch, item_batches, model_fingerprint, query_vectors

__all__ = ["ENGINE_METHODS", "ItemBatch", "item_batches", "model_fingerprint", "query_vectors"]
