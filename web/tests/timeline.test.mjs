// The page's ordering rule without a browser: node --test web/tests/timeline.test.mjs
import assert from "node:assert/strict";
import test from "node:test";
import { Timeline } from "../src/timeline.js";

const message = (seq) => ({ seq, content: `m${seq}` });

test("messages take their place by seq, whatever order they come in", () => {
  const timeline = new Timeline();
  assert.equal(timeline.insert(message(5)), 0);
  assert.equal(timeline.insert(message(7)), 1);
  assert.equal(timeline.insert(message(6)), 1);
  assert.equal(timeline.insert(message(1)), 0);
  assert.deepEqual(timeline.seqs, [1, 5, 6, 7]);
  assert.equal(timeline.oldest, 1);
  assert.equal(timeline.newest, 7);
});

test("a seq already held, or none at all, is not added", () => {
  const timeline = new Timeline();
  timeline.insert(message(3));
  assert.equal(timeline.insert(message(3)), -1);
  assert.equal(timeline.insert({ content: "legacy, no seq" }), -1);
  assert.equal(timeline.insert(message(0)), -1);
  assert.equal(timeline.insert(message(2.5)), -1);
  assert.equal(timeline.size, 1);
});

test("an empty timeline resumes from nothing", () => {
  const timeline = new Timeline();
  assert.equal(timeline.newest, null);
  assert.equal(timeline.oldest, null);
});
