import { keepsConnection } from '../lib/pgln.connection.js';

/**
 * Which failed queries leave their connection usable: decided by notify (release or destroy a
 * pooled connection) and by the cleanup of stale backends (a refusal to log once, or a session
 * that ended and must try again later). The server's severity is localized; the SQLSTATE is not.
 */
describe('keepsConnection', () => {
  it.each([
    ['an ordinary error (a full notification queue)', { severity: 'ERROR', code: '54000' }, true],
    ['a permission error (pg_terminate_backend without the right)', { severity: 'ERROR', code: '42501' }, true],
    ['FATAL 57P01, terminated by an administrator', { severity: 'FATAL', code: '57P01' }, false],
    ['57P01 under another lc_messages (the severity localized)', { severity: 'SCHWERWIEGEND', code: '57P01' }, false],
    ['57P02, a crash shutdown', { severity: 'FATAL', code: '57P02' }, false],
    ['08006, a connection failure', { severity: 'FATAL', code: '08006' }, false],
    ['any FATAL (an idle-in-transaction timeout, 25P03)', { severity: 'FATAL', code: '25P03' }, false],
    ['a PANIC', { severity: 'PANIC', code: 'XX000' }, false],
    ['a socket error, no server answer', Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }), false],
    ['a timeout of ours', new Error('timeout'), false],
    ['nothing', undefined, false],
  ])('%s: %s', (_, error, keeps) => {
    expect(keepsConnection(error)).toBe(keeps);
  });
});
