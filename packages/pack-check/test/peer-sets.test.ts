import { expect, test } from 'vitest';
import { selectPeerSets } from '../src/peer-sets.js';

test('PACK_CHECK_PEER_SETS picks the sets by name; unset or empty means both', () => {
  expect(selectPeerSets(undefined).map((set) => set.name)).toEqual(['latest', 'floor']);
  expect(selectPeerSets(' ').map((set) => set.name)).toEqual(['latest', 'floor']);
  expect(selectPeerSets('floor').map((set) => set.name)).toEqual(['floor']);
  expect(selectPeerSets('floor, latest').map((set) => set.name)).toEqual(['latest', 'floor']);
});

test('an unknown set name is refused, never read as "none"', () => {
  expect(() => selectPeerSets('flor')).toThrow(
    /PACK_CHECK_PEER_SETS must list some of latest, floor/,
  );
  expect(() => selectPeerSets('floor,')).toThrow(/PACK_CHECK_PEER_SETS/);
});
