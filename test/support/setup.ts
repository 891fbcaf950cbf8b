/**
 * Fails the test during which a promise was rejected with nobody listening: the module must
 * never leave one behind, whatever fault it meets.
 */
const unhandled: unknown[] = [];
process.on('unhandledRejection', (reason) => void unhandled.push(reason));

afterEach(() => {
  const found = unhandled.splice(0);
  expect(found).toEqual([]);
});
