"""The catalogue's items, compiled: the ring buffer's writes (``Catalogue.push``) and the
built-in item generators' loops (``marl_rec.envs.parts.items``: items around topic centres,
written to arrays or straight into the ring, and RecSim's utility items).

One module for both, beside ``state.py``: the topic generator writes into the ring through
``ring_slot``, and numba's cache keys a kernel on its own file only, so a kernel calls only
helpers of its own module (a change to a helper elsewhere would not recompile its callers);
the parts package cannot hold it, since ``state.py`` imports it.
"""

from __future__ import annotations

import math
from collections import namedtuple

from marl_rec.envs.compiled import jit
from marl_rec.envs.views import CatalogueView

# where n new items go: the first slot (``Catalogue.claim``'s head), the ring's size, the first new uid
RingWrite = namedtuple("RingWrite", "head capacity first_uid")
# the new items' bookkeeping: topic, creator (-1: none) and birth (one round for all, or one each)
Published = namedtuple("Published", "topic creator birth")


@jit
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


# TopicItemGenerator's model: embedding noise, quality noise, length distribution (minutes)
TopicParams = namedtuple("TopicParams", "spread quality_std length_mean length_std min_length")
# the arrays n generated items are written to, one row each
ItemRows = namedtuple("ItemRows", "embedding quality length")


@jit
def _topic_item(i, row, centres, topic, quality_mean, z, p, out):
    """Item i of n = len(topic) around its topic's centre into ``row`` of ``out`` (``ItemRows``):
    embedding = unit(centre + spread · z), quality ~ N(quality_mean, quality_std), length ~
    N(length_mean, length_std) clipped at min_length (``p``: ``TopicParams``); ``z`` (n · (d + 2))
    standard normals: n · d for the embeddings, then n for quality, then n for length."""
    n, d = len(topic), out.embedding.shape[1]
    norm = 0.0
    for j in range(d):
        x = centres[topic[i], j] + z[i * d + j] * p.spread
        out.embedding[row, j] = x
        norm += x * x
    norm = max(math.sqrt(norm), 1e-8)
    for j in range(d):
        out.embedding[row, j] /= norm
    out.quality[row] = quality_mean[i] + z[n * d + i] * p.quality_std
    out.length[row] = max(p.length_mean + z[n * d + n + i] * p.length_std, p.min_length)


@jit
def topic_items(centres, topic, quality_mean, z, params, out):
    """n items around their topics' centres (``_topic_item``) into ``out`` (``ItemRows``:
    (n, d), (n,), (n,)); ``params``: ``TopicParams``."""
    p, rows = TopicParams(*params), ItemRows(*out)
    for i in range(len(topic)):
        _topic_item(i, i, centres, topic, quality_mean, z, p, rows)


@jit
def push_topic_items(ring, published, centres, quality_mean, z, params, catalogue, slots):
    """``topic_items`` generated straight into the ring buffer (``push_items`` without the
    intermediate arrays): ``ring`` a ``RingWrite``, ``published`` the items' ``Published``
    bookkeeping (their topics), ``catalogue`` the ``Catalogue.view``; their slots into ``slots``."""
    ring, published, cat, p = RingWrite(*ring), Published(*published), CatalogueView(*catalogue), TopicParams(*params)
    rows = ItemRows(cat.embedding, cat.quality, cat.length)
    for i in range(len(published.topic)):
        s = ring_slot(ring, i, cat, published)
        slots[i] = s
        _topic_item(i, s, centres, published.topic, quality_mean, z, p, rows)


@jit
def utility_items(topic_draws, z, cluster_means, quality_std, length_mean, topic, out):
    """RecSim's utility-model documents: a cluster per item (uniform from ``topic_draws``, or
    the given one when ``topic_draws`` is empty), one-hot features, quality ~ N(cluster mean,
    quality_std) from standard normals ``z``, every item ``length_mean`` long; into ``topic``
    and ``out`` (``ItemRows``)."""
    rows = ItemRows(*out)
    n_topics = len(cluster_means)
    for i in range(len(topic)):
        if len(topic_draws):
            topic[i] = min(int(topic_draws[i] * n_topics), n_topics - 1)
        for j in range(n_topics):
            rows.embedding[i, j] = 0.0
        rows.embedding[i, topic[i]] = 1.0
        rows.quality[i] = cluster_means[topic[i]] + quality_std * z[i]
        rows.length[i] = length_mean
