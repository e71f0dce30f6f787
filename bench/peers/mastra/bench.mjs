// The bench-cycle workload on Mastra, in-process as its users run it: @mastra/core workflows
// with @mastra/libsql storage on a file. Prints one JSON line.
//
//   node bench.mjs --db /tmp/x.db --phases warmup:20,seq:500,c64:3000,burst:1000
//
// seq: cycles one after another (latency of start and resume, cycles/s); cN: cycles by N
// concurrent callers; burst: N runs started at once, then resumed at once. `peak_mb` is the
// process's VmHWM at the end.
import { readFileSync } from 'node:fs';
import { Mastra } from '@mastra/core';
import { createStep, createWorkflow } from '@mastra/core/workflows';
import { LibSQLStore } from '@mastra/libsql';
import { z } from 'zod';

const Value = z.object({ value: z.number() });
const Approval = z.object({ approved: z.boolean(), value: z.number() });

const add = createStep({
  id: 'add', inputSchema: Value, outputSchema: Value,
  execute: async ({ inputData }) => ({ value: inputData.value + 1 }),
});
const approve = createStep({
  id: 'approve', inputSchema: Value, outputSchema: Value, suspendSchema: Value, resumeSchema: Approval,
  execute: async ({ inputData, resumeData, suspend }) => {
    if (!resumeData) return await suspend({ value: inputData.value }, { resumeLabel: 'approval' });
    return { value: resumeData.approved ? resumeData.value : 0 };
  },
});
const finish = createStep({
  id: 'finish', inputSchema: Value, outputSchema: Value,
  execute: async ({ inputData }) => ({ value: inputData.value }),
});
const cycleWorkflow = createWorkflow({ id: 'bench-cycle', inputSchema: Value, outputSchema: Value })
  .then(add).then(approve).then(finish).commit();

function arg(name) {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) throw new Error(`--${name} is required`);
  return process.argv[i + 1];
}

const storage = new LibSQLStore({ id: 'bench', url: `file:${arg('db')}` });
const mastra = new Mastra({ storage, workflows: { cycle: cycleWorkflow }, logger: false });
const workflow = mastra.getWorkflow('cycle');
const errors = {};
let counter = 0;

function fail(kind, detail) {
  errors[kind] = (errors[kind] || 0) + 1;
  if (!errors._sample) errors._sample = String(detail).slice(0, 300);
}

async function start(n, lat) {
  const t = performance.now();
  try {
    const run = await workflow.createRun();
    const r = await run.start({ inputData: { value: n } });
    if (r.status !== 'suspended') return fail('start', JSON.stringify(r).slice(0, 300));
    lat.push(performance.now() - t);
    return [run, r.steps.approve.suspendPayload.value];
  } catch (e) { return fail('start', e); }
}

async function resume([run, got], lat) {
  const t = performance.now();
  try {
    const r = await run.resume({ step: 'approve', resumeData: { approved: true, value: got } });
    if (r.status !== 'success' || r.result.value !== got) return fail('resume', JSON.stringify(r).slice(0, 300));
    lat.push(performance.now() - t);
    return true;
  } catch (e) { return fail('resume', e); }
}

async function cycles(total, concurrency) {
  const starts = [], resumes = [];
  let left = total;
  const t0 = performance.now();
  async function worker() {
    while (left > 0) {
      left -= 1;
      const n = ++counter;
      const started = await start(n, starts);
      if (started && started[1] !== n + 1) fail('value', `${started[1]} for ${n}`);
      else if (started) await resume(started, resumes);
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { wall_s: (performance.now() - t0) / 1000, done: resumes.length, start_ms: starts, resume_ms: resumes };
}

async function burst(n) {
  const starts = [], resumes = [];
  const t0 = performance.now();
  const base = counter; counter += n;
  const started = (await Promise.all(Array.from({ length: n }, (_, i) => start(base + i, starts)))).filter(Boolean);
  const t1 = performance.now();
  await Promise.all(started.map((s) => resume(s, resumes)));
  const t2 = performance.now();
  return { wall_s: (t2 - t0) / 1000, start_wall_s: (t1 - t0) / 1000, resume_wall_s: (t2 - t1) / 1000, done: resumes.length };
}

function peakMb() {
  const m = readFileSync('/proc/self/status', 'utf8').match(/VmHWM:\s+(\d+)/);
  return m ? Number(m[1]) / 1024 : null;
}

const out = { peer: 'mastra', core: JSON.parse(readFileSync(new URL('./node_modules/@mastra/core/package.json', import.meta.url))).version, phases: {} };
for (const phase of arg('phases').split(',')) {
  const [name, count] = phase.split(':');
  const n = Number(count);
  if (name === 'burst') out.phases[name] = await burst(n);
  else if (name === 'seq' || name === 'warmup') out.phases[name] = await cycles(n, 1);
  else if (name.startsWith('c')) out.phases[name] = await cycles(n, Number(name.slice(1)));
  else throw new Error(`unknown phase ${name}`);
}
delete out.phases.warmup;
out.errors = errors;
out.peak_mb = peakMb();
// Exit once the line is flushed: writes to a pipe are asynchronous, and an early exit()
// would cut the output at 64 KiB. (exit() at all: the storage client keeps the loop alive.)
process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(0));
