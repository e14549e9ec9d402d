"""The catalogue ring buffer's compiled writes (``Catalogue.push``; a generator's own kernel
writes through ``ring_slot`` too)."""

from __future__ import annotations

from collections import namedtuple

from marl_rec.envs.compiled import jit, step
from marl_rec.envs.views import CatalogueView

# where n new items go: the first slot (``Catalogue.claim``'s head), the ring's size, the first new uid
RingWrite = namedtuple("RingWrite", "head capacity first_uid")
# the new items' bookkeeping: topic, creator (-1: none) and birth (one round for all, or one each)
Published = namedtuple("Published", "topic creator birth")


@step
def ring_slot(ring, i, cat, published):
    """The slot of the i-th new item (``ring``: a ``RingWrite``, ``cat``: a ``CatalogueView``,
    ``published``: a ``Published``), overwriting the oldest; its bookkeeping written: topic,
    creator, birth, a new uid, no impressions, clicks or watch time yet."""
    s = (ring.head + i) % ring.capacity
    cat.topic[s] = published.topic[i]
    cat.creator[s] = published.creator[i]
    cat.birth[s] = published.birth[i] if len(published.birth) > 1 else published.birth[0]
    cat.uid[s] = ring.first_uid + i
    cat.impressions[s], cat.clicks[s], cat.watch_time[s] = 0.0, 0.0, 0.0
    return s


@jit
def push_items(ring, published, embedding, quality, length, catalogue, slots):
    """Write n items (``embedding`` (n, d), ``quality``, ``length``, and their ``Published``
    bookkeeping) into the ring buffer (``Catalogue.view``) from ``RingWrite`` ``ring``'s head
    on: their slots into ``slots``."""
    ring, published, cat = RingWrite(*ring), Published(*published), CatalogueView(*catalogue)
    for i in range(len(published.topic)):
        s = ring_slot(ring, i, cat, published)
        slots[i] = s
        for j in range(cat.embedding.shape[1]):
            cat.embedding[s, j] = embedding[i, j]
        cat.quality[s] = quality[i]
        cat.length[s] = length[i]
