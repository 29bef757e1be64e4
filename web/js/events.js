// The event stream (GET /api/v1/events/stream, server-sent events) read with fetch() and a
// stream reader, because EventSource cannot send the bearer token.  It reconnects with
// Last-Event-ID, so no event is missed across a dropped connection.

import { askToken, authHeaders } from './api.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function startEvents({ onEvent, onState }) {
  let last = null;
  let stopped = false;
  const ctl = { stop() { stopped = true; if (abort) abort.abort(); } };
  let abort = null;

  function dispatch(block) {
    let id = null, data = '';
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) continue;           // keep-alive comment
      const i = line.indexOf(':');
      const field = i < 0 ? line : line.slice(0, i);
      const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
      if (field === 'id') id = value;
      else if (field === 'data') data += (data ? '\n' : '') + value;
    }
    if (id !== null) last = id;
    if (!data) return;
    try { onEvent(JSON.parse(data)); } catch (e) { console.error('event', e); }
  }

  (async () => {
    let backoff = 1000;
    while (!stopped) {
      try {
        const headers = { Accept: 'text/event-stream', ...authHeaders() };
        if (last !== null) headers['Last-Event-ID'] = last;
        abort = new AbortController();
        const res = await fetch(`/api/v1/events/stream${last === null ? '?after=latest' : ''}`,
          { headers, signal: abort.signal, cache: 'no-store' });
        if (res.status === 401) {
          const body = await res.json().catch(() => null);
          onState('auth');
          await askToken(headers.Authorization ? body?.error?.desc || 'unauthorised' : null);
          continue;
        }
        if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
        onState('live');
        backoff = 1000;
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value.replace(/\r\n?/g, '\n');
          let i;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            dispatch(buf.slice(0, i));
            buf = buf.slice(i + 2);
          }
        }
      } catch (e) {
        if (stopped) return;
      }
      onState('reconnecting');
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 10000);
    }
  })();
  return ctl;
}
