"""Hello-world HTTP servers in Python, for readers coming from Python: Tornado and aiohttp.

The same answer as braid's http_server (`GET /` -> 200 "Hello, World!", text/plain), one
process, one event loop, access logging off: what each framework's documentation shows for a
minimal server. Tornado runs on its default asyncio loop.

Usage: python3 http_py.py tornado|aiohttp [--port N]. Prints `listening on 127.0.0.1:PORT`
(flushed) when ready; exits on SIGTERM/SIGINT.
"""

import asyncio
import signal
import socket
import sys


def listening_socket(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('127.0.0.1', port))
    s.listen(1024)
    s.setblocking(False)
    return s


def ready(sock):
    print('listening on 127.0.0.1:%d' % sock.getsockname()[1], flush=True)


async def run_tornado(sock, stop):
    import tornado.httpserver
    import tornado.web

    class Hello(tornado.web.RequestHandler):
        def get(self):
            self.set_header('Content-Type', 'text/plain')
            self.write('Hello, World!')

    app = tornado.web.Application([('/', Hello)], log_function=lambda handler: None)
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets([sock])
    ready(sock)
    await stop.wait()
    server.stop()


async def run_aiohttp(sock, stop):
    from aiohttp import web

    async def hello(request):
        return web.Response(text='Hello, World!')

    app = web.Application()
    app.router.add_get('/', hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    ready(sock)
    await stop.wait()
    await runner.cleanup()


async def main(kind, port):
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sock = listening_socket(port)
    await (run_tornado if kind == 'tornado' else run_aiohttp)(sock, stop)


if __name__ == '__main__':
    args = sys.argv[1:]
    if not args or args[0] not in ('tornado', 'aiohttp'):
        sys.exit('usage: http_py.py tornado|aiohttp [--port N]')
    port = int(args[2]) if len(args) >= 3 and args[1] == '--port' else 0
    asyncio.run(main(args[0], port))
