// A small shop frontend (the ophion-test/node-app image, tests/docker_images.py): node's own
// http module on 127.0.0.1:$PORT.
const http = require("http");

const server = http.createServer((req, res) => {
  if (req.url === "/") {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end("ok");
  } else if (req.url === "/work") {
    let total = 0;
    for (let i = 0; i < 20000; i++) total += i * i;
    console.log(`worked out total=${total}`);
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ total }));
  } else {
    res.writeHead(404, { "content-type": "text/plain" });
    res.end("not found");
  }
});

server.listen(Number(process.env.PORT), "127.0.0.1", () => {
  console.log(`listening on 127.0.0.1:${process.env.PORT}`);
});

// As PID 1 node gets no default SIGTERM action: stop serving so `docker stop` is quick; an
// SDK's own SIGTERM handler may still flush, and the unref'd timer ends a process kept alive.
process.on("SIGTERM", () => {
  server.close();
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
});
