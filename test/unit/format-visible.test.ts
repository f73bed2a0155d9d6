// The one escaping function of human-readable output: which characters it shows as escapes, and
// that tables measure what is shown.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { table, visible } from '../../src/cli/format.ts';

test('visible: C0, DEL, C1, bidi, zero-width, BOM, tag characters, separators and lone surrogates become escapes', () => {
  assert.equal(visible('a\x1b[2Kb\nc\rd\te\x00f\x7f'), String.raw`a\x1b[2Kb\nc\rd\te\x00f\x7f`);
  assert.equal(visible('\u0085\u009b31m'), String.raw`\u0085\u009b31m`);
  assert.equal(visible('\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069'), String.raw`\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069`);
  assert.equal(visible('rm\u200b -rf\u200d\u2060\ufeff\u00ad\u061c'), String.raw`rm\u200b -rf\u200d\u2060\ufeff\u00ad\u061c`);
  assert.equal(visible('x\u{e0041}\u2028\u2029\ud800'), String.raw`x\u{e0041}\u2028\u2029\ud800`);
  // Printable text, including non-Latin scripts and emoji, is left alone; escaping twice changes nothing.
  const plain = "select 'grüße', 'データ', '🙂' from t where a \\ b";
  assert.equal(visible(plain), plain);
  const once = visible('a\x1b\u202e\n');
  assert.equal(visible(once), once);
});

test('table: cells are escaped and measured as shown', () => {
  assert.equal(table(['A', 'B'], [['x\ny', 'z'], ['\x1b[1G', null]]), ['A        B', String.raw`x\ny     z`, String.raw`\x1b[1G`].join('\n'));
});
