// The comparison protocol on uWebSockets.js, with its built-in pub/sub:
// every connection subscribes to one topic; a text message starting with
// "B" is published to it (the sender too, since it is subscribed), anything
// else goes back to its sender.
// Usage: node uws-server.js PORT
'use strict';
const uWS = require('@trufflesuite/uws-js-unofficial');

const port = Number(process.argv[2] || 9100);
const app = uWS.App();
app.ws('/*', {
  compression: uWS.DISABLED,
  maxPayloadLength: 16 * 1024 * 1024,
  // No idle timeout: idle connections are part of the measurement.
  idleTimeout: 0,
  maxBackpressure: 64 * 1024 * 1024,
  open: (ws) => { ws.subscribe('room'); },
  message: (ws, message, isBinary) => {
    const bytes = new Uint8Array(message);
    if (!isBinary && bytes.length > 0 && bytes[0] === 0x42 /* B */) {
      app.publish('room', message, false);
    } else {
      ws.send(message, isBinary);
    }
  },
});
app.listen('127.0.0.1', port, (token) => {
  if (!token) {
    console.error(`uws: cannot listen on ${port}`);
    process.exit(1);
  }
  console.error(`uws listening on 127.0.0.1:${port}`);
});
