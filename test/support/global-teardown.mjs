// @ts-check
/** Stops and deletes the embedded server, if global-setup started one. */
export default async function globalTeardown() {
  const state = /** @type {any} */ (globalThis);
  await state.__PGLN_EMBEDDED__?.destroy();
  state.__PGLN_EMBEDDED__ = undefined;
}
