// Security rules tests for infra/firestore.rules against the Firestore emulator.
//
//   FIRESTORE_EMULATOR_HOST=127.0.0.1:8931 node --test tests/js/rules.test.mjs
//
// Frontends may only read their own sessions (and the steps/messages under
// them); every client write is denied (the Cloud Function writes with the Admin
// SDK); anonymous users get nothing; everything else is denied.
import { readFileSync } from 'node:fs';
import { after, before, beforeEach, describe, test } from 'node:test';

import {
  assertFails,
  assertSucceeds,
  initializeTestEnvironment,
} from '@firebase/rules-unit-testing';
import {
  Timestamp,
  collection,
  collectionGroup,
  deleteDoc,
  doc,
  getDoc,
  getDocs,
  orderBy,
  query,
  setDoc,
  setLogLevel,
  updateDoc,
  where,
  writeBatch,
} from 'firebase/firestore';

const PROJECT_ID = process.env.GCLOUD_PROJECT || 'demo-workshop-chat';
const RULES_PATH = new URL('../../infra/firestore.rules', import.meta.url);

function emulatorHostPort() {
  const value = process.env.FIRESTORE_EMULATOR_HOST;
  if (!value) {
    throw new Error(
      'FIRESTORE_EMULATOR_HOST is not set: start the Firestore emulator and run e.g. ' +
        'FIRESTORE_EMULATOR_HOST=127.0.0.1:8931 node --test tests/js/rules.test.mjs',
    );
  }
  const i = value.lastIndexOf(':');
  const host = value.slice(0, i).replace(/^\[(.*)\]$/, '$1');
  const port = Number(value.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port) || port <= 0) {
    throw new Error(`FIRESTORE_EMULATOR_HOST must be HOST:PORT, got ${JSON.stringify(value)}`);
  }
  return { host, port };
}

// alice owns s1, bob owns s2.
const S1 = 'sessions/s1';
const S1_STEP = `${S1}/steps/define`;
const S1_MESSAGES = `${S1_STEP}/messages`;
const S1_MSG = `${S1_MESSAGES}/m1`;
const S2 = 'sessions/s2';
const S2_MESSAGES = `${S2}/steps/define/messages`;

async function seed(testEnv) {
  await testEnv.withSecurityRulesDisabled(async (ctx) => {
    const db = ctx.firestore();
    const t = (ms) => Timestamp.fromMillis(1_700_000_000_000 + ms);
    const batch = writeBatch(db);
    for (const [session, owner] of [
      [S1, 'alice'],
      [S2, 'bob'],
    ]) {
      // s1's team: carol a member, dave a viewer (erin was one, and left).
      const members =
        session === S1
          ? { carol: { role: 'member', name: 'Carol' }, dave: { role: 'viewer', name: 'Dave' } }
          : {};
      batch.set(doc(db, session), { ownerUid: owner, members, createdAt: t(0), updatedAt: t(3) });
      batch.set(doc(db, `${session}/steps/define`), { createdAt: t(0), updatedAt: t(3) });
      for (const [id, role, ms] of [
        ['m1', 'user', 1],
        ['m2', 'assistant', 2],
      ]) {
        batch.set(doc(db, `${session}/steps/define/messages/${id}`), {
          id,
          role,
          parts: [{ type: 'text', text: `${role} text` }],
          createdAt: t(ms),
          updatedAt: t(ms),
          status: 'done',
        });
      }
    }
    batch.set(doc(db, `${S1}/board/b1`), { kind: 'insight', title: 'Pagers', stepId: 'define' });
    batch.set(doc(db, `${S2}/board/b1`), { kind: 'idea', title: 'Bob', stepId: 'define' });
    batch.set(doc(db, `${S1}/invites/h1`), { role: 'member', createdBy: 'alice' });
    batch.set(doc(db, 'rateLimits/alice'), { count: 1, windowStart: t(0) });
    batch.set(doc(db, 'unknownCollection/x'), { ownerUid: 'alice' });
    await batch.commit();
  });
}

// Denied writes otherwise log a gRPC PERMISSION_DENIED warning each.
setLogLevel('silent');

let testEnv;
const db = {}; // alice, bob, anon -> client Firestore instances

// Fails the whole file at once, with the message, when the emulator is not configured.
const { host, port } = emulatorHostPort();

before(async () => {
  try {
    testEnv = await initializeTestEnvironment({
      projectId: PROJECT_ID,
      firestore: { rules: readFileSync(RULES_PATH, 'utf8'), host, port },
    });
  } catch (e) {
    // A bare "fetch failed" (emulator not running) or a rules compile error.
    const why = e.cause?.message ? `${e.message} (${e.cause.message})` : e.message;
    throw new Error(`cannot load rules into the Firestore emulator at ${host}:${port}: ${why}`, {
      cause: e,
    });
  }
  db.alice = testEnv.authenticatedContext('alice').firestore();
  db.bob = testEnv.authenticatedContext('bob').firestore();
  for (const who of ['carol', 'dave', 'erin']) {
    db[who] = testEnv.authenticatedContext(who).firestore();
  }
  db.anon = testEnv.unauthenticatedContext().firestore();
});

beforeEach(async () => {
  await testEnv.clearFirestore();
  await seed(testEnv);
});

after(async () => {
  await testEnv?.cleanup();
});

const listMessages = (f, path) => getDocs(query(collection(f, path), orderBy('createdAt')));

// Runs labelled checks in parallel (each is `() => assertSucceeds(...)` or
// `() => assertFails(...)`) and reports every failing label, so a matrix of
// cases costs one clear+seed instead of one per case.
async function checkAll(cases) {
  const results = await Promise.allSettled(Object.values(cases).map((fn) => fn()));
  const failed = Object.keys(cases)
    .map((label, i) => [label, results[i]])
    .filter(([, r]) => r.status === 'rejected')
    .map(([label, r]) => `  ${label}: ${r.reason?.message ?? r.reason}`);
  if (failed.length) throw new Error(`${failed.length} check(s) failed:\n${failed.join('\n')}`);
}

describe('owner (alice) reads her own session', () => {
  test('get session', async () => {
    const snap = await assertSucceeds(getDoc(doc(db.alice, S1)));
    if (snap.get('ownerUid') !== 'alice') throw new Error('unexpected session data');
  });
  test('get step and message, list steps', () =>
    checkAll({
      'get step': () => assertSucceeds(getDoc(doc(db.alice, S1_STEP))),
      'get message': () => assertSucceeds(getDoc(doc(db.alice, S1_MSG))),
      'list steps': () => assertSucceeds(getDocs(collection(db.alice, `${S1}/steps`))),
      'get board item': () => assertSucceeds(getDoc(doc(db.alice, `${S1}/board/b1`))),
      'list board': () => assertSucceeds(getDocs(collection(db.alice, `${S1}/board`))),
    }));
  test('list messages ordered by createdAt', async () => {
    const snap = await assertSucceeds(listMessages(db.alice, S1_MESSAGES));
    const ids = snap.docs.map((d) => d.id).join(',');
    if (ids !== 'm1,m2') throw new Error(`expected m1,m2, got ${ids}`);
  });
  test('list own sessions filtered by ownerUid', async () => {
    const snap = await assertSucceeds(
      getDocs(query(collection(db.alice, 'sessions'), where('ownerUid', '==', 'alice'))),
    );
    if (snap.size !== 1) throw new Error(`expected 1 session, got ${snap.size}`);
  });
});

describe("the team (member carol, viewer dave) reads the session; a former member does not", () => {
  for (const who of ['carol', 'dave']) {
    test(`${who}: session, step, messages, board`, () =>
      checkAll({
        'get session': () => assertSucceeds(getDoc(doc(db[who], S1))),
        'get step': () => assertSucceeds(getDoc(doc(db[who], S1_STEP))),
        'list messages': () => assertSucceeds(listMessages(db[who], S1_MESSAGES)),
        'list board': () => assertSucceeds(getDocs(collection(db[who], `${S1}/board`))),
        "get bob's session": () => assertFails(getDoc(doc(db[who], S2))),
        'get an invite': () => assertFails(getDoc(doc(db[who], `${S1}/invites/h1`))),
        'write a message': () =>
          assertFails(setDoc(doc(db[who], `${S1_MESSAGES}/m9`), { role: 'user' })),
        'make themselves owner': () =>
          assertFails(updateDoc(doc(db[who], S1), { ownerUid: who })),
      }));
  }
  test('erin (left): nothing', () =>
    checkAll({
      'get session': () => assertFails(getDoc(doc(db.erin, S1))),
      'list messages': () => assertFails(listMessages(db.erin, S1_MESSAGES)),
      'list board': () => assertFails(getDocs(collection(db.erin, `${S1}/board`))),
    }));
  test('alice (owner): not even she reads the invites', () =>
    assertFails(getDoc(doc(db.alice, `${S1}/invites/h1`))));
});

describe("reads of someone else's session are denied", () => {
  for (const who of ['bob', 'anon']) {
    test(`${who}: get session/step/message, list messages of alice's session`, () =>
      checkAll({
        'get session': () => assertFails(getDoc(doc(db[who], S1))),
        'get step': () => assertFails(getDoc(doc(db[who], S1_STEP))),
        'get message': () => assertFails(getDoc(doc(db[who], S1_MSG))),
        'list messages': () => assertFails(listMessages(db[who], S1_MESSAGES)),
        'list steps': () => assertFails(getDocs(collection(db[who], `${S1}/steps`))),
        'list board': () => assertFails(getDocs(collection(db[who], `${S1}/board`))),
        'get board item': () => assertFails(getDoc(doc(db[who], `${S1}/board/b1`))),
      }));
  }
  test("alice: list messages of bob's session", () =>
    assertFails(listMessages(db.alice, S2_MESSAGES)));
  test('alice: other cross-session reads', () =>
    checkAll({
      "get bob's session": () => assertFails(getDoc(doc(db.alice, S2))),
      "get bob's message": () => assertFails(getDoc(doc(db.alice, `${S2_MESSAGES}/m1`))),
      'list all sessions (no ownerUid filter)': () =>
        assertFails(getDocs(collection(db.alice, 'sessions'))),
      "list bob's sessions": () =>
        assertFails(getDocs(query(collection(db.alice, 'sessions'), where('ownerUid', '==', 'bob')))),
      'collection-group query over all messages': () =>
        assertFails(getDocs(collectionGroup(db.alice, 'messages'))),
    }));
  test('anon: list sessions, get a nonexistent session', () =>
    checkAll({
      'list sessions': () => assertFails(getDocs(collection(db.anon, 'sessions'))),
      'get nonexistent session': () => assertFails(getDoc(doc(db.anon, 'sessions/nope'))),
    }));
});

describe('every client write is denied', () => {
  const message = { id: 'm9', role: 'user', parts: [], status: 'done' };
  for (const who of ['alice', 'bob', 'anon']) {
    test(`${who}: create/update/delete sessions, steps, messages`, () =>
      checkAll({
        'create session': () =>
          assertFails(setDoc(doc(db[who], 'sessions/new'), { ownerUid: who })),
        'create message in s1': () =>
          assertFails(setDoc(doc(db[who], `${S1_MESSAGES}/m9`), message)),
        'update message in s1': () =>
          assertFails(updateDoc(doc(db[who], S1_MSG), { status: 'edited' })),
        'delete message in s1': () => assertFails(deleteDoc(doc(db[who], S1_MSG))),
        'create step in s1': () => assertFails(setDoc(doc(db[who], `${S1}/steps/other`), {})),
        'update own-or-not session s1': () =>
          assertFails(updateDoc(doc(db[who], S1), { updatedAt: Timestamp.now() })),
        'delete session s1': () => assertFails(deleteDoc(doc(db[who], S1))),
        'create board item in s1': () =>
          assertFails(setDoc(doc(db[who], `${S1}/board/b9`), { kind: 'idea', title: 'x' })),
        'update board item in s1': () =>
          assertFails(updateDoc(doc(db[who], `${S1}/board/b1`), { title: 'x' })),
        'delete board item in s1': () => assertFails(deleteDoc(doc(db[who], `${S1}/board/b1`))),
        "set ownerUid on bob's session (update)": () =>
          assertFails(updateDoc(doc(db[who], S2), { ownerUid: 'mallory' })),
        "set ownerUid on bob's session (set)": () =>
          assertFails(setDoc(doc(db[who], S2), { ownerUid: 'mallory' })),
      }));
  }
});

describe('server-only and unknown collections are denied', () => {
  for (const who of ['alice', 'bob', 'anon']) {
    test(`${who}: rateLimits and an unknown top-level collection`, () =>
      checkAll({
        'get rateLimits doc': () => assertFails(getDoc(doc(db[who], 'rateLimits/alice'))),
        'list rateLimits': () => assertFails(getDocs(collection(db[who], 'rateLimits'))),
        'write rateLimits': () =>
          assertFails(setDoc(doc(db[who], 'rateLimits/alice'), { count: 0 })),
        'get unknown collection doc': () =>
          assertFails(getDoc(doc(db[who], 'unknownCollection/x'))),
        'list unknown collection': () =>
          assertFails(getDocs(collection(db[who], 'unknownCollection'))),
        'write unknown collection': () =>
          assertFails(setDoc(doc(db[who], 'unknownCollection/y'), { a: 1 })),
      }));
  }
});
