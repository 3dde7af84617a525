"""CPU per object of the stream threads' work: parse, list pages, watch events.

The stream threads' share of a cold start and of a burst, without the rest of the
daemon: 10,000 Services and their EndpointSlices (``run.service_objects``), written
through the fake API server so they have its exact shape (uid, creationTimestamp,
resourceVersion), then

- ``parse``: ``parse_service`` / ``parse_endpoint_slice`` over the decoded dicts;
- ``list``: ``ResourceStream._list`` over list pages of ``LIST_PAGE_SIZE`` as the API
  server sends them (JSON decoding, parsing, the ``Listed`` value);
- ``watch``: ``ResourceStream._watch`` over one chunked watch body of an ADDED event
  per object, one chunk per event as the API server writes them (chunk decoding, lines,
  JSON decoding, parsing, one ``Changed`` value per event).

Each is timed in thread CPU time; the figures are the median (and range) of
``--repeat`` runs, in microseconds per object. Run it against another checkout with
``PYTHONPATH`` pointing there: it drives only entry points that have not changed.

    PYTHONPATH=$PWD python -m bench.parsing --repeat 7
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import structlog

from bench.run import service_objects
from kvip_bgp.domain.objects import parse_endpoint_slice, parse_service
from kvip_bgp.kube.client import LIST_PAGE_SIZE
from kvip_bgp.kube.watch import ResourceStream
from kvip_bgp.testing.fakeapi import FakeKubeAPI


class _Listing:
    """A list response: the body all at once, as ``urllib3`` gives ``.data``."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def release_conn(self) -> None:
        pass


class _Inner:
    """``http.client``'s response as ``watch.raw_body`` expects it before the body.

    Its ``fp`` is a file, not a ``BytesIO``: the stream thread polls the descriptor to
    read on while more waits (``watch.readable``), and a file is always readable, as
    a socket is that holds the rest of a burst."""

    chunked = True
    chunk_left = None

    def __init__(self, body: bytes) -> None:
        self.fp = tempfile.TemporaryFile()  # noqa: SIM115 (closed by the response)
        self.fp.write(body)
        self.fp.seek(0)

    def close(self) -> None:
        pass


class _Watching:
    """A chunked watch response the stream thread decodes itself (``raw_body``)."""

    chunked = True

    def __init__(self, body: bytes) -> None:
        self.headers: dict[str, str] = {}
        self._fp = _Inner(body)

    def release_conn(self) -> None:
        pass

    def close(self) -> None:
        self._fp.fp.close()


class _Resource:
    """What ``ResourceStream`` uses of a ``Resource``: a name, a parser and ``get``."""

    def __init__(self, name: str, parse: Callable[[Any], Any], pages: list[bytes], watch: bytes):
        self.name = name
        self.parse = parse
        self._pages = pages
        self._watch = watch
        self._next = 0

    def get(self, query: Iterable[tuple[str, str]], timeout: Any) -> Any:
        params = dict(query)
        if params.get("watch") == "true":
            return _Watching(self._watch)
        page = int(params["continue"]) if "continue" in params else 0
        return _Listing(self._pages[page])


def _list_pages(kind: str, raws: list[bytes], rv: int) -> list[bytes]:
    pages = []
    for start in range(0, len(raws), LIST_PAGE_SIZE):
        end = start + LIST_PAGE_SIZE
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if end < len(raws):
            meta["continue"] = str(len(pages) + 1)
            meta["remainingItemCount"] = len(raws) - end
        head = json.dumps({"kind": kind, "apiVersion": "v1", "metadata": meta}).encode()
        pages.append(head[:-1] + b',"items":[' + b",".join(raws[start:end]) + b"]}")
    return pages


def _watch_body(raws: list[bytes]) -> bytes:
    chunks = []
    for raw in raws:
        line = b'{"type":"ADDED","object":' + raw + b"}\n"
        chunks.append(b"%x\r\n%s\r\n" % (len(line), line))
    chunks.append(b"0\r\n\r\n")
    return b"".join(chunks)


def _raws(count: int) -> tuple[list[bytes], list[bytes]]:
    """The fake API server's stored bytes of each Service and each EndpointSlice."""
    api = FakeKubeAPI()
    services: list[bytes] = []
    slices: list[bytes] = []
    for obj in service_objects(count):
        stored = json.dumps(api.put(obj), separators=(",", ":")).encode()
        (services if obj["kind"] == "Service" else slices).append(stored)
    return services, slices


def _cpu(run: Callable[[], Any]) -> float:
    gc.collect()  # each run starts with the same heap: no collection owed by the last
    started = time.thread_time()
    run()
    return time.thread_time() - started


def _stream(resource: _Resource, delivered: list[Any]) -> ResourceStream:
    return ResourceStream(resource, delivered.append, lambda name, kind: None)  # type: ignore[arg-type]


def _runs(
    parse: Callable[[Any], Any], objs: list[Any], resource: _Resource, count: int
) -> dict[str, float]:
    """Seconds of CPU for one run of each measurement."""
    delivered: list[Any] = []
    seconds = {
        "parse": _cpu(lambda: [parse(o) for o in objs]),
        "list": _cpu(lambda: _stream(resource, delivered)._list()),
    }
    assert len(delivered) == 1 and len(delivered[0].objects) == count
    delivered.clear()
    seconds["watch"] = _cpu(lambda: _stream(resource, delivered)._watch("1"))
    assert len(delivered) == count
    return seconds


def measure(count: int, repeat: int) -> Iterator[tuple[str, list[float]]]:
    """(what, µs per object of each run) for each measurement."""
    services, slices = _raws(count)
    kinds = (
        ("services", parse_service, services, "ServiceList"),
        ("endpointslices", parse_endpoint_slice, slices, "EndpointSliceList"),
    )
    for name, parse, raws, list_kind in kinds:
        objs = [json.loads(raw) for raw in raws]
        resource = _Resource(name, parse, _list_pages(list_kind, raws, 1), _watch_body(raws))
        gc.freeze()  # the inputs are not what the collector should spend the runs on
        runs = [_runs(parse, objs, resource, count) for _ in range(repeat)]
        for what in runs[0]:
            yield f"{name} {what}", [run[what] / count * 1e6 for run in runs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())  # kube.listed
    for what, per_object in measure(args.count, args.repeat):
        print(
            f"{what:24} {statistics.median(per_object):6.2f} µs/object "
            f"(range {min(per_object):.2f}-{max(per_object):.2f}, {len(per_object)} runs)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
