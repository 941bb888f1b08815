"""A WSGI server in one function: each `wasi:http` request the host hands the
component goes to a WSGI app (PEP 3333), here Flask, and its answer back.

The body is read whole before the app runs and written as the app yields it.
A failure of the app that escapes it is a 500 with the exception's type, so an
instance never traps on a request.
"""

import io
import sys
import traceback
from urllib.parse import urlsplit

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import streams, types

# At most what `blocking-write-and-flush` takes at once.
_WRITE_CHUNK = 4096
# Connection-level fields a wasi:http response may not carry.
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
_METHODS = {
    types.Method_Get: "GET",
    types.Method_Head: "HEAD",
    types.Method_Post: "POST",
    types.Method_Put: "PUT",
    types.Method_Delete: "DELETE",
    types.Method_Connect: "CONNECT",
    types.Method_Options: "OPTIONS",
    types.Method_Trace: "TRACE",
    types.Method_Patch: "PATCH",
}


def handler(app):
    """The class componentize-py exports as `wasi:http/incoming-handler`,
    serving `app`."""

    class IncomingHandler(exports.IncomingHandler):
        def handle(self, request, response_out):
            try:
                status, headers, body = _call(app, request)
            except Exception as e:  # the app's own errors are its answers
                traceback.print_exc(file=sys.stderr)
                status, headers = 500, [("content-type", "text/plain; charset=utf-8")]
                body = [f"{type(e).__name__} in the WSGI bridge\n".encode()]
            _respond(response_out, status, headers, body)

    return IncomingHandler


def _read_body(request):
    body = request.consume()
    chunks = []
    with body.stream() as stream:
        while True:
            try:
                chunks.append(stream.blocking_read(65536))
            except Err as e:
                if isinstance(e.value, streams.StreamError_Closed):
                    break
                raise OSError("reading the request body failed") from None
    types.IncomingBody.finish(body)
    return b"".join(chunks)


def _environ(request, body):
    method = request.method()
    name = _METHODS.get(type(method)) or method.value
    target = urlsplit(request.path_with_query() or "/")
    authority = request.authority() or "localhost"
    host, _, port = authority.rpartition(":") if ":" in authority else (authority, "", "")
    scheme = request.scheme()
    url_scheme = "https" if isinstance(scheme, types.Scheme_Https) else "http"
    environ = {
        "REQUEST_METHOD": name,
        "SCRIPT_NAME": "",
        "PATH_INFO": target.path or "/",
        "QUERY_STRING": target.query,
        "SERVER_NAME": host or authority,
        "SERVER_PORT": port or ("443" if url_scheme == "https" else "80"),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": url_scheme,
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    with request.headers() as fields:
        for key, value in fields.entries():
            value = value.decode("latin-1")
            key = key.lower()
            if key == "content-type":
                environ["CONTENT_TYPE"] = value
            elif key == "content-length":
                continue  # the body read is what counts
            else:
                name = "HTTP_" + key.upper().replace("-", "_")
                environ[name] = f"{environ[name]},{value}" if name in environ else value
    return environ


def _call(app, request):
    body = _read_body(request)
    environ = _environ(request, body)
    started = {}

    def start_response(status, headers, exc_info=None):
        if exc_info and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started["status"] = int(status.split(" ", 1)[0])
        started["headers"] = headers
        return lambda data: started.setdefault("written", []).append(data)

    result = app(environ, start_response)
    try:
        chunks = list(started.get("written", [])) + [c for c in result if c]
    finally:
        if hasattr(result, "close"):
            result.close()
    return started["status"], started["headers"], chunks


def _respond(response_out, status, headers, chunks):
    fields = [
        (k.lower(), v.encode("latin-1"))
        for k, v in headers
        if k.lower() not in _HOP_BY_HOP
    ]
    try:
        header_fields = types.Fields.from_list(fields)
    except Err:  # a name or value HTTP forbids
        status, chunks = 500, [b"the app answered with a header HTTP does not allow\n"]
        header_fields = types.Fields.from_list([("content-type", b"text/plain")])
    response = types.OutgoingResponse(header_fields)
    response.set_status_code(status)
    body = response.body()
    types.ResponseOutparam.set(response_out, Ok(response))
    with body.write() as stream:
        for chunk in chunks:
            for i in range(0, len(chunk), _WRITE_CHUNK):
                stream.blocking_write_and_flush(chunk[i : i + _WRITE_CHUNK])
    types.OutgoingBody.finish(body, None)
