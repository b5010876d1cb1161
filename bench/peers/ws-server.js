// The comparison protocol on Node.js `ws` 8: every connection in one room;
// a text message starting with "B" goes to every connection (the sender
// too), anything else back to its sender. Written as the ws README does a
// broadcast: a loop over `wss.clients`.
// Usage: node ws-server.js PORT
'use strict';
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 9100);
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false, clientTracking: true });

wss.on('connection', (socket) => {
  socket.on('message', (data, isBinary) => {
    if (!isBinary && data.length > 0 && data[0] === 0x42 /* B */) {
      for (const client of wss.clients) {
        if (client.readyState === 1) client.send(data, { binary: false });
      }
    } else {
      socket.send(data, { binary: isBinary });
    }
  });
  socket.on('error', () => {});
});
wss.on('listening', () => console.error(`ws listening on 127.0.0.1:${port}`));
