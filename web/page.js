// The page: fetches a config and the four IDX files from `wgtrain web`, trains through the
// wasm bindings (web/src/lib.rs) and draws what comes back. The URL contract the tests read:
//   ?config=NAME&epochs=N&device=gpu|cpu&set=KEY=VALUE…&autorun=1  trains without a click and
//     puts the summary JSON (summary.json's keys) in #summary, logging `wgtrain summary {…}`;
//     Each epoch's row is logged as `wgtrain epoch {…}` (metrics.csv's columns) on the way;
//   ?check=1  runs every kernel check and puts the rows in #check, logging `wgtrain check {…}`.
// On failure the element holds {"error": "…"} and the console line says the same.
import init, * as wgtrain from './pkg/wgtrain_web.js';

const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);
const FILES = ['train-images-idx3-ubyte', 'train-labels-idx1-ubyte',
               't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'];
let data = null; // the four files' bytes, fetched once

function status(text, isError = false) {
  $('status').textContent = text;
  $('status').className = isError ? 'error' : '';
}

// The contract's end: the element's JSON and the one console line.
function report(id, word, json) {
  $(id).textContent = json;
  $(id).hidden = false;
  console.log(`wgtrain ${word} ${json}`);
}

async function fetchOk(url, as) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: ${response.status} ${response.statusText}`);
  return as === 'bytes' ? new Uint8Array(await response.arrayBuffer()) : response[as]();
}

async function loadConfig(name) {
  $('config-text').value = await fetchOk(`configs/${name}.toml`, 'text');
  const epochs = $('config-text').value.match(/^\s*epochs\s*=\s*(\d+)/m);
  $('epochs').value = query.get('epochs') ?? (epochs ? epochs[1] : 10);
}

function drawCurves(canvas, title, series) {
  const g = canvas.getContext('2d');
  const [w, h, pad] = [canvas.width, canvas.height, 34];
  g.clearRect(0, 0, w, h);
  g.fillStyle = '#222';
  g.font = '13px system-ui';
  g.fillText(title, pad, 16);
  const values = series.flatMap((s) => s.values).filter(Number.isFinite);
  if (values.length === 0) return;
  const [lo, hi] = [Math.min(...values), Math.max(...values)];
  const n = Math.max(2, ...series.map((s) => s.values.length));
  const x = (i) => pad + (i * (w - 2 * pad)) / (n - 1);
  const y = (v) => h - pad - ((v - lo) / (hi - lo || 1)) * (h - 2 * pad);
  g.fillText(hi.toPrecision(4), 2, pad);
  g.fillText(lo.toPrecision(4), 2, h - pad);
  series.forEach((s, k) => {
    g.strokeStyle = s.colour;
    g.beginPath();
    s.values.forEach((v, i) => (i ? g.lineTo(x(i), y(v)) : g.moveTo(x(i), y(v))));
    g.stroke();
    g.fillStyle = s.colour;
    g.fillText(s.name, w - 120, 16 + 15 * k);
  });
}

function drawConfusion(confusion) {
  const { counts, names } = JSON.parse(confusion);
  const rows = counts.map((row, t) =>
    `<tr><th>${names[t]}</th>${row.map((c, p) => `<td${p === t ? ' class="pass"' : ''}>${c}</td>`).join('')}</tr>`);
  $('confusion').innerHTML =
    `<tr><th>true \\ predicted</th>${names.map((n) => `<th>${n}</th>`).join('')}</tr>${rows.join('')}`;
}

async function train() {
  const records = [];
  const name = $('config').value;
  const device = $('device').value;
  const overrides = [`epochs=${$('epochs').value}`, ...query.getAll('set')];
  $('result').hidden = true;
  try {
    status('Fetching the data…');
    data ??= await Promise.all(FILES.map((f) => fetchOk(`data/${f}`, 'bytes')));
    status(`Training ${name} on the ${device}…`);
    const trained = await wgtrain.train($('config-text').value, name, overrides, device, ...data,
      (json) => {
        console.log(`wgtrain epoch ${json}`);
        const r = JSON.parse(json);
        records.push(r);
        status(`epoch ${r.epoch}: validation accuracy ${(100 * r.val_accuracy).toFixed(2)}%, loss ${r.val_loss.toFixed(4)} (${r.seconds.toFixed(1)} s)`);
        drawCurves($('loss-curve'), 'loss', [
          { name: 'training', colour: '#1f77b4', values: records.map((q) => q.train_loss) },
          { name: 'validation', colour: '#d62728', values: records.map((q) => q.val_loss) }]);
        drawCurves($('accuracy-curve'), 'accuracy', [
          { name: 'training', colour: '#1f77b4', values: records.map((q) => q.train_accuracy) },
          { name: 'validation', colour: '#d62728', values: records.map((q) => q.val_accuracy) }]);
      });
    const summary = JSON.parse(trained.summary);
    $('test-accuracy').textContent = `${(100 * summary.test_accuracy).toFixed(2)}% (loss ${summary.test_loss.toFixed(4)})`;
    $('download').href = URL.createObjectURL(new Blob([trained.model]));
    $('download-metrics').href = URL.createObjectURL(new Blob([trained.metrics], { type: 'text/csv' }));
    $('download-summary').href = URL.createObjectURL(
      new Blob([JSON.stringify(summary, null, 2) + '\n'], { type: 'application/json' }));
    drawConfusion(trained.confusion);
    $('result').hidden = false;
    status(`Finished: ${summary.epochs_run} epochs in ${summary.seconds.toFixed(1)} s on ${summary.device}.`);
    report('summary', 'summary', trained.summary);
  } catch (e) {
    status(`error: ${e}`, true);
    report('summary', 'summary', JSON.stringify({ error: String(e) }));
  }
}

async function check() {
  try {
    status('Checking every kernel against the CPU reference…');
    const json = await wgtrain.check();
    const table = JSON.parse(json);
    $('check-table').innerHTML = '<tr><th>check</th><th>cases</th><th>worst / tolerance</th><th></th></tr>' +
      table.rows.map((r) => `<tr><td>${r.check}</td><td>${r.cases}</td><td>${r.worst}</td>` +
        `<td class="${r.passed ? 'pass' : 'fail'}">${r.passed ? 'pass' : (r.error ?? r.detail)}</td></tr>`).join('');
    $('check-box').hidden = false;
    status(table.verdict, !table.rows.every((r) => r.passed));
    report('check', 'check', json);
  } catch (e) {
    status(`error: ${e}`, true);
    report('check', 'check', JSON.stringify({ error: String(e) }));
  }
}

async function main() {
  await init();
  try {
    $('adapter').textContent = `WebGPU adapter: ${await wgtrain.adapter()}`;
  } catch (e) {
    $('adapter').textContent = `No WebGPU adapter here (${e}); the CPU path still trains.`;
    $('device').value = 'cpu';
  }
  const names = await fetchOk('configs/index.json', 'json');
  $('config').innerHTML = names.map((n) => `<option>${n}</option>`).join('');
  $('config').value = query.get('config') ?? (names.includes('momentum') ? 'momentum' : names[0]);
  $('config').onchange = () => loadConfig($('config').value);
  if (query.get('device')) $('device').value = query.get('device');
  await loadConfig($('config').value);
  $('train').onclick = train;
  $('check-run').onclick = check;
  $('train').disabled = $('check-run').disabled = false;
  if (query.get('check') === '1') await check();
  if (query.get('autorun') === '1') await train();
}

main().catch((e) => {
  status(`error: ${e}`, true);
  report('summary', 'summary', JSON.stringify({ error: String(e) }));
});
