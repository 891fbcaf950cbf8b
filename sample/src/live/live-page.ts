/**
 * The live page: plain HTML and a small script, no build. It shows the products table and keeps it
 * live from `/events`: on an out-of-sync event (the first one, after every resync of the server's
 * subscription, and after the browser reconnected) it refetches the table, holding the changes that
 * arrive meanwhile and applying them after it; each change is applied unless the row it describes
 * is older than the one shown (`version`).
 *
 * It refetches from the table (`/products?from=table`), not from the server's cache: after a
 * reconnect the page's subscription and the cache resync independently, and the cache may not have
 * reloaded yet when the page asks.
 */
export const LIVE_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Products, live — nestjs-pgln sample</title>
<link rel="icon" href="data:,">
<style>
  body { font: 15px/1.5 system-ui, sans-serif; margin: 2rem auto; max-width: 44rem; padding: 0 1rem; color: #1f2328; }
  h1 { font-size: 1.4rem; margin: 0 0 .25rem; }
  p.lead { margin: 0 0 1rem; color: #59636e; }
  .bar { display: flex; gap: .5rem; flex-wrap: wrap; margin-bottom: 1rem; }
  .badge { border-radius: 1rem; padding: .1rem .7rem; font-size: .85rem; background: #eef1f4; }
  .badge b { font-weight: 600; }
  .live { background: #dafbe1; } .warn { background: #fff1c2; } .down { background: #ffe1e1; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #e4e7eb; }
  td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
  tr.changed td { animation: flash 1.5s ease-out; }
  @keyframes flash { from { background: #fff1a8; } to { background: transparent; } }
  #note { min-height: 1.5rem; margin-top: 1rem; color: #59636e; font-size: .9rem; }
</style>
</head>
<body>
<h1>Products</h1>
<p class="lead">Kept live by PostgreSQL LISTEN/NOTIFY through <code>PglnService.observe()</code>. Change a row anywhere: it shows here.</p>
<div class="bar">
  <span class="badge" id="stream">stream: <b id="stream-state">connecting</b></span>
  <span class="badge" id="listener">listener: <b id="listener-state">?</b></span>
</div>
<table>
  <thead><tr><th class="num">id</th><th>name</th><th class="num">price</th><th class="num">version</th></tr></thead>
  <tbody id="rows"></tbody>
</table>
<div id="note"></div>
<script>
  const rows = new Map();
  let held = null; // the changes that arrive while a refetch runs, applied after it
  let refetches = 0;
  const changed = new Set();

  function render() {
    const body = document.getElementById('rows');
    body.replaceChildren(...[...rows.values()].sort((a, b) => a.id - b.id).map((product) => {
      const row = document.createElement('tr');
      row.dataset.id = product.id;
      if (changed.has(product.id)) row.className = 'changed';
      for (const [value, numeric] of [[product.id, true], [product.name, false], [(product.priceCents / 100).toFixed(2), true], [product.version, true]]) {
        const cell = document.createElement('td');
        cell.textContent = value;
        if (numeric) cell.className = 'num';
        row.append(cell);
      }
      return row;
    }));
    changed.clear();
  }

  function apply(change) {
    if (held) return void held.push(change);
    if (change.op === 'delete') rows.delete(change.id);
    else if (!(rows.get(change.id)?.version >= change.version)) {
      const { op, ...product } = change;
      rows.set(product.id, product);
      changed.add(product.id);
    }
    render();
  }

  async function refetch(reason) {
    const mine = ++refetches;
    held = [];
    try {
      const response = await fetch('/products?from=table');
      if (!response.ok) throw new Error('HTTP ' + response.status);
      const products = await response.json();
      if (mine !== refetches) return; // a later refetch answers for it
      rows.clear();
      for (const product of products) rows.set(product.id, product);
      const pending = held;
      held = null;
      pending.forEach(apply);
      render();
      document.getElementById('note').textContent =
        'Refetched ' + products.length + ' products at ' + new Date().toLocaleTimeString() + ' after an out-of-sync event (' + reason + ').';
    } catch (error) {
      if (mine !== refetches) return;
      // Keep holding: a new stream starts with an out-of-sync event, whose refetch replaces all of it.
      document.getElementById('note').textContent = 'Refetch failed (' + error.message + '): retrying in a second.';
      setTimeout(() => {
        if (mine === refetches) connect();
      }, 1000);
    }
  }

  function show(id, text, level) {
    document.getElementById(id + '-state').textContent = text;
    document.getElementById(id).className = 'badge ' + level;
  }

  // EventSource reconnects by itself after a network error, but gives up for good on an answer
  // that is not an event stream (a server shutting down may give one): then a new one is opened.
  let source;
  function connect() {
    source?.close();
    source = new EventSource('/events');
    source.onopen = () => show('stream', 'connected', 'live');
    const mine = source;
    source.onerror = () => {
      show('stream', 'reconnecting', 'down');
      if (mine.readyState === EventSource.CLOSED) setTimeout(() => mine === source && connect(), 1000);
    };
    source.addEventListener('state', (event) => {
      const { state } = JSON.parse(event.data);
      show('listener', state, state === 'live' ? 'live' : state === 'closed' ? 'down' : 'warn');
    });
    source.addEventListener('out-of-sync', (event) => refetch(JSON.parse(event.data).reason));
    source.addEventListener('change', (event) => apply(JSON.parse(event.data)));
  }
  connect();
</script>
</body>
</html>
`;
