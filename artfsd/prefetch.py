"""Small files, the daemon's side: when to prefetch a directory, and waiting for a fetch on the loop.

The lazy reader owns every fetch into the cache (:mod:`artfs._lazy`, its ``whole`` module): a
small blob (``LazyBlobs.small_max``, 1 MiB) is fetched whole in one GET and verified in memory
before it appears in the cache; ``LazyBlobs.prefetch`` fetches many in the background (behind
every read, within a quarter of the cache's bound); and every fetch in flight is in its one
registry, so a blob is never fetched twice at once in this daemon. Two things are left here:

* **the trigger**: the first cold open of a small file in a version directory asks the lazy
  reader to prefetch that directory's other small files (:class:`DirPrefetch`, once per
  directory), which is what a training job's random-order epoch over a folder of images needs;
  an epoch over a cache that is already complete never starts it;
* **waiting on trio**: a reader opening a blob whose fetch is in flight waits for it on the event
  loop (:func:`wait_for`, a callback of the fetch wakes the task), not in a worker thread.
"""

from __future__ import annotations

from typing import Any

import trio

from artfs.lowlevel import LazyBlobs


class DirPrefetch:
    """Prefetches of version directories' small files: each directory once per mount."""

    def __init__(self, blobs: LazyBlobs) -> None:
        self.blobs = blobs
        self._started: set[tuple[Any, int]] = set()  # (version key, directory) prefetched once

    def want(self, vkey: Any, d: int) -> bool:
        """True once per (version, directory)."""
        if (vkey, d) in self._started:
            return False
        self._started.add((vkey, d))
        return True

    def start(self, v: Any, tree: Any, d: int) -> int:
        """Queue the small files of directory ``d`` of ``v``'s tree, once (the first call); how many."""
        if not self.want(v.key, d):
            return 0
        return self.blobs.prefetch(v.key[0], small_files_of(tree, d, self.blobs.small_max))


def small_files_of(tree: Any, d: int, small_max: int) -> list[tuple[str, int]]:
    """(digest, size) of the stored files of at most ``small_max`` bytes directly in directory ``d``."""
    out = []
    for i in tree.slots(d):
        node = tree.slot_node(i)
        if tree.is_dir(node) or node in tree.refs:
            continue
        size = tree.sizes[node]
        digest = tree.digest(node)
        if digest is not None and 0 < size <= small_max:
            out.append((digest, size))
    return out


async def wait_for(job: Any, timeout: float) -> None:
    """On the loop: wait (at most ``timeout``) for a fetch in flight, without a worker thread."""
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()

    def wake() -> None:  # in the thread that finished the fetch
        try:
            token.run_sync_soon(done.set)
        except trio.RunFinishedError:  # the loop is gone (unmounted): nobody waits any more
            pass

    if not job.on_done(wake):
        return  # finished already
    with trio.move_on_after(timeout):
        await done.wait()
