import { fileURLToPath } from 'node:url';
import semver from 'semver';
import { expect, test } from 'vitest';
import { PEER_FLOORS, selectPeerSets } from '../src/peer-sets.js';
import { publishedPackages } from '../src/scratch-app.js';

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

test('every peer of a published package has a floor: the lowest version its range accepts', () => {
  const packages = publishedPackages(fileURLToPath(new URL('../../', import.meta.url)));
  expect(packages.length).toBeGreaterThan(10);
  for (const pkg of packages) {
    for (const [peer, range] of Object.entries(pkg.peerDependencies)) {
      if (peer.startsWith('@idem/')) continue;
      // The floor the floor set installs is the lowest version the range accepts: no range
      // claims a version pack-check does not install.
      expect({ pkg: pkg.name, peer, floor: semver.minVersion(range)?.version }).toEqual({
        pkg: pkg.name,
        peer,
        floor: PEER_FLOORS[peer],
      });
    }
  }
});
