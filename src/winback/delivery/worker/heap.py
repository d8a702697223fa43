"""Keeping the cyclic garbage collector's full passes off a delivery backlog.

A batch allocates tens of thousands of containers (contacts, orders, decisions, render
contexts) that live until its end, so CPython's collector runs young passes often and, now
and then, a full pass over every object of the process: the modules, SQLAlchemy's and
Jinja2's caches, the compiled templates, the settings (about a hundred thousand objects, tens
of milliseconds each time). None of them will ever be garbage. :func:`settle` moves the
objects alive when a process starts on a backlog into the collector's permanent generation
(:func:`gc.freeze`), once per process: the later passes look at the batches' objects only.
Objects frozen are still freed by reference counting; only a reference cycle among them
that became garbage later would stay (none is expected of startup state, and it is once)."""

from __future__ import annotations

import gc
import threading

#: A batch this large is a backlog: worth settling the heap before it.
BACKLOG_ROWS = 200

_settled = False
_lock = threading.Lock()


def settle() -> bool:
    """Collect once, then freeze what is alive; only the first call of the process does it.
    True when this call did."""
    global _settled
    with _lock:
        if _settled:
            return False
        _settled = True
    gc.collect()
    gc.freeze()
    return True
