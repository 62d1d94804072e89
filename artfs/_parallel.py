"""Running one function over many items in a few threads, without a future per item.

``ThreadPoolExecutor.map`` creates a future, a lock and a condition for every item and hands each
one from thread to thread; for 10,000 small files that bookkeeping cost more than the files'
I/O. Here each worker takes the next index from a shared counter and stores its result in place.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

#: threads that send store requests at once (blob checks and uploads, part reads)
STORE_WORKERS = 8

T = TypeVar("T")
R = TypeVar("R")


def pmap(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """``[fn(x) for x in items]`` in up to ``workers`` threads, results in order.

    The first exception stops the workers taking new items and is raised once they are done.
    """
    n = len(items)
    workers = min(workers, n)
    if workers <= 1:
        return [fn(x) for x in items]
    results: list[R | None] = [None] * n
    lock = threading.Lock()
    nxt = 0
    failed = False

    def work() -> None:
        nonlocal nxt, failed
        while True:
            with lock:
                if failed or nxt >= n:
                    return
                i = nxt
                nxt += 1
            try:
                results[i] = fn(items[i])
            except BaseException:
                failed = True
                raise

    with ThreadPoolExecutor(workers) as ex:
        futures = [ex.submit(work) for _ in range(workers)]
    for f in futures:
        f.result()  # the first error, in worker order
    return results  # type: ignore[return-value]
