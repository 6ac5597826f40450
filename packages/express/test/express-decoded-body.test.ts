import { BodyAlreadyReadError } from '@idem/http';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keepRawBody, type ParsedBodyApp, startParsedBodyApp } from './support/parsed-body-app.js';

// idem mounted after a parser that decodes the body as UTF-8 (express.text(), express.json()):
// every invalid byte sequence becomes U+FFFD, so two different bodies decode to one string.
// Fingerprinting that string replayed one body's outcome for the other. Such a body is
// refused (BodyAlreadyReadError, 500, nothing run, no key taken) unless a reader kept its
// bytes as `req.rawBody` (a Buffer), which are then fingerprinted. Real Express on loopback.

let app: ParsedBodyApp;
beforeAll(async () => {
  app = await startParsedBodyApp(
    (withParsers) => {
      // `/kept` keeps the bytes as req.rawBody (as NestJS's rawBody option does), `/text` and
      // `/json` keep nothing.
      withParsers.use('/kept', express.text({ verify: keepRawBody }));
      withParsers.use('/text', express.text());
      withParsers.use('/json', express.json());
    },
    ['/kept', '/text', '/json'],
  );
});
afterAll(() => app.close());

let counter = 0;
const freshKey = () => `decoded-${process.pid}-${++counter}`;

const invalid = (byte: number) => Buffer.from([0x61, byte, 0x62]);
const jsonWith = (byte: number) =>
  Buffer.concat([Buffer.from('{"to":"'), Buffer.from([byte]), Buffer.from('"}')]);

describe('a body decoded as UTF-8 before the middleware', () => {
  it('express.text(), invalid UTF-8: refused with BodyAlreadyReadError, nothing run, no key taken', async () => {
    const key = freshKey();
    const before = app.runs;
    const first = await app.post('/text', key, invalid(0xff), 'text/plain');
    const other = await app.post('/text', key, invalid(0xfe), 'text/plain');
    expect([first.status, other.status]).toEqual([500, 500]);
    expect(other.replayed).toBe(false);
    expect(JSON.parse(first.body).name).toBe('BodyAlreadyReadError');
    expect(JSON.parse(first.body).message).toMatch(/U\+FFFD/);
    expect(app.errors.at(-1)).toBeInstanceOf(BodyAlreadyReadError);
    expect(app.runs).toBe(before);
    // No key was taken: valid text under the same key runs once, then replays.
    const valid = await app.post('/text', key, Buffer.from('aéb'), 'text/plain');
    expect(valid.status).toBe(201);
    expect((await app.post('/text', key, Buffer.from('aéb'), 'text/plain')).replayed).toBe(true);
    expect(app.runs).toBe(before + 1);
  });

  it('express.json(), invalid UTF-8 in a string: refused, never replayed one for the other', async () => {
    const key = freshKey();
    const before = app.runs;
    const first = await app.post('/json', key, jsonWith(0xff), 'application/json');
    const other = await app.post('/json', key, jsonWith(0xfe), 'application/json');
    expect([first.status, other.status]).toEqual([500, 500]);
    expect(JSON.parse(other.body).name).toBe('BodyAlreadyReadError');
    expect(app.runs).toBe(before);
  });

  it('the bytes kept as req.rawBody (a Buffer): fingerprinted, the same bytes replay, others get 422', async () => {
    const key = freshKey();
    const before = app.runs;
    const first = await app.post('/kept', key, invalid(0xff), 'text/plain');
    expect(first.status).toBe(201);
    const again = await app.post('/kept', key, invalid(0xff), 'text/plain');
    expect(again.replayed).toBe(true);
    expect(again.body).toBe(first.body);
    expect((await app.post('/kept', key, invalid(0xfe), 'text/plain')).status).toBe(422);
    expect(app.runs).toBe(before + 1);
  });
});
