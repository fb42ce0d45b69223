// Node.js + zeromq.js side of bench/zmq.ts. Mirrors bench/zmq.ts's --peer/--client modes
// message for message so both implementations do exactly the same work.
//   node zmq_bench.cjs peer                  -> prints "READY <endpoint>", serves until killed
//   node zmq_bench.cjs client <ep> <test> <n> <size> -> prints one JSON line {ops, seconds, cpu}
// Protocol (one frame per message, first byte says what to do):
//   'E' echo back, 'S' sink (count only), 'F' reply "done" (all earlier 'S' were received).
// zeromq is resolved through NODE_PATH (bench/.node/node_modules), installed by the bench.
"use strict";
const zmq = require("zeromq");

const E = 0x45, S = 0x53, F = 0x46;

async function peer() {
  const router = new zmq.Router();
  await router.bind("tcp://127.0.0.1:*");
  console.log(`READY ${router.lastEndpoint}`);
  const done = Buffer.from("done");
  for await (const [id, body] of router) {
    const kind = body[0];
    if (kind === E) await router.send([id, body]);
    else if (kind === F) await router.send([id, done]);
  }
}

async function client(endpoint, test, n, size) {
  const dealer = new zmq.Dealer();
  dealer.connect(endpoint);
  // Warm-up: make sure the connection is up and the JIT has seen the loop.
  const probe = Buffer.alloc(64, E);
  for (let i = 0; i < 200; i++) {
    await dealer.send(probe);
    await dealer.receive();
  }
  let seconds;
  const cpu0 = process.cpuUsage();
  if (test === "rt") {
    const msg = Buffer.alloc(size, E);
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      await dealer.send(msg);
      await dealer.receive();
    }
    seconds = (performance.now() - t0) / 1000;
  } else {
    const msg = Buffer.alloc(size, S);
    const flush = Buffer.from([F]);
    const t0 = performance.now();
    for (let i = 0; i < n; i++) await dealer.send(msg);
    await dealer.send(flush);
    await dealer.receive();
    seconds = (performance.now() - t0) / 1000;
  }
  const cpu = process.cpuUsage(cpu0);
  console.log(JSON.stringify({ ops: n, seconds, cpu: (cpu.user + cpu.system) / 1e6 }));
  dealer.close();
}

const [mode, endpoint, test, n, size] = process.argv.slice(2);
if (mode === "peer") {
  peer().catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else if (mode === "client") {
  client(endpoint, test, Number(n), Number(size)).then(() => process.exit(0), (e) => {
    console.error(e);
    process.exit(1);
  });
} else {
  console.error(`zmq_bench.cjs: unknown mode ${mode}`);
  process.exit(2);
}
