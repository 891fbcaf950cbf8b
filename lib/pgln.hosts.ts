import type { PglnHost, PglnTargetSessionAttrs } from './interfaces/index.js';
import { ANY_WITH_SEVERAL_HOSTS, HOSTS_INVALID, TARGET_SESSION_ATTRS_INVALID } from './pgln.messages.js';

/** The values of `target_session_attrs` the module accepts: the ones a LISTEN or a NOTIFY can run on. */
export const TARGET_SESSION_ATTRS: readonly PglnTargetSessionAttrs[] = ['any', 'read-write', 'primary'];

/** A connection string's hosts, and the same string reduced to its first host (which pg can parse). */
export interface SplitConnectionString {
  /** The string with one host (the first), and without `target_session_attrs`. */
  readonly single: string;
  /** Every host, in order, when there are several; none for a single-host string. */
  readonly hosts: readonly PglnHost[];
  /** `target_session_attrs` as given, if it was. */
  readonly targetSessionAttrs?: string;
}

/** `host[:port]`, an IPv6 address in brackets: `[::1]:5432`. */
function parseHost(text: string): PglnHost {
  const match = /^(\[[^\]]*\]|[^:]*)(?::(\d*))?$/.exec(text);
  if (!match) throw new Error('an entry is not host[:port]');
  const host = decodeURIComponent(match[1]!.replace(/^\[(.*)\]$/, '$1'));
  // As libpq: a host without a port gets the default one, not another host's.
  return { host, port: match[2] ? Number(match[2]) : Number(process.env.PGPORT) || 5432 };
}

/**
 * Splits libpq's multi-host URL, `postgres://user:pass@h1:5432,h2:5433/db?target_session_attrs=primary`,
 * which node-postgres cannot parse (brianc/node-postgres#1470), into its hosts and a single-host
 * string for the rest of the settings. A string with one host, or in another form, keeps its host
 * for pg to parse (`hosts` is empty). Throws for an entry of a host list that is not `host[:port]`,
 * naming that entry only (never the rest of the string, which may hold a password).
 */
export function splitConnectionString(connectionString: string): SplitConnectionString {
  const url = /^([a-z][a-z0-9+.-]*:\/\/)([^/?#]*@)?([^/?#]*)(.*)$/i.exec(connectionString);
  if (!url) return { single: connectionString, hosts: [] };
  const [, scheme, userinfo = '', hostList, rest] = url as unknown as [string, string, string | undefined, string, string];
  // One host is pg's to parse (and to report, for a bad port say): only a list is taken apart here.
  const hosts = hostList.includes(',') ? hostList.split(',').map(parseHost) : [];
  // The query string, without target_session_attrs (pg would pass it on to the server as a setting).
  const [path, query = ''] = rest.split(/\?(.*)/s) as [string, string | undefined];
  const params = new URLSearchParams(query);
  const targetSessionAttrs = params.get('target_session_attrs') ?? undefined;
  params.delete('target_session_attrs');
  const search = params.toString();
  const first = hostList.split(',')[0] ?? '';
  const single = `${scheme}${userinfo}${first}${path}${search ? `?${search}` : ''}`;
  return targetSessionAttrs === undefined ? { single, hosts } : { single, hosts, targetSessionAttrs };
}

/** `host:port`, an IPv6 address in brackets, for logs and errors. */
export function describeHost({ host, port }: PglnHost): string {
  const name = host.includes(':') ? `[${host}]` : host;
  return port === undefined ? name : `${name}:${port}`;
}

/** What a connection's settings say of its hosts: several, or one that must qualify; undefined for one plain host. */
export interface HostChoice {
  /** In order; empty for the one host of the connection settings (which must qualify). */
  readonly hosts: readonly PglnHost[];
  readonly attrs: PglnTargetSessionAttrs;
}

/** The host settings of the module options, for {@link checkHosts} and {@link chooseHosts}. */
export interface HostOptions {
  readonly hosts?: unknown;
  readonly targetSessionAttrs?: unknown;
}

function isHost(value: unknown): value is PglnHost {
  const { host, port } = (value ?? {}) as Partial<PglnHost>;
  return (
    typeof host === 'string' &&
    host !== '' &&
    !/[\s,]/.test(host) &&
    (port === undefined || (Number.isInteger(port) && port > 0 && port < 65_536))
  );
}

/** Problems of `hosts` / `targetSessionAttrs`, and of a connection string's hosts and `target_session_attrs`. */
export function hostProblems({ hosts, targetSessionAttrs }: HostOptions, connectionStrings: readonly (string | undefined)[]): string[] {
  const problems: string[] = [];
  if (hosts !== undefined && !(Array.isArray(hosts) && hosts.length > 0 && hosts.every(isHost))) {
    problems.push(HOSTS_INVALID(Array.isArray(hosts) ? JSON.stringify(hosts) : String(hosts)));
  }
  const attrs = (where: string, value: unknown) => {
    if (value !== undefined && !TARGET_SESSION_ATTRS.includes(value as PglnTargetSessionAttrs)) {
      problems.push(TARGET_SESSION_ATTRS_INVALID(where, typeof value === 'string' ? `'${value}'` : String(value), TARGET_SESSION_ATTRS));
    }
  };
  attrs('targetSessionAttrs', targetSessionAttrs);
  for (const connectionString of connectionStrings) {
    if (typeof connectionString !== 'string') continue;
    try {
      const split = splitConnectionString(connectionString);
      attrs("the connection string's target_session_attrs", split.targetSessionAttrs);
      if (split.hosts.length > 1 && !split.hosts.every(isHost)) problems.push("the connection string's host list must be host[:port] entries separated by commas");
    } catch (error) {
      // Never the string itself: it may hold a password.
      problems.push(`the connection string's host list cannot be parsed: ${(error as Error).message}`);
    }
  }
  // 'any' could keep a standby, which refuses LISTEN and NOTIFY.
  const several = (Array.isArray(hosts) && hosts.length > 1) || connectionStrings.some((text) => typeof text === 'string' && isMultiHost(text));
  const anyAttrs = targetSessionAttrs === 'any' || (targetSessionAttrs === undefined && connectionStrings.some((text) => typeof text === 'string' && attrsOf(text) === 'any'));
  if (several && anyAttrs) problems.push(ANY_WITH_SEVERAL_HOSTS());
  return problems;
}

/** Whether a connection string lists several hosts. */
export function isMultiHost(connectionString: string): boolean {
  try {
    return splitConnectionString(connectionString).hosts.length > 1;
  } catch {
    return false;
  }
}

function attrsOf(connectionString: string): string | undefined {
  try {
    return splitConnectionString(connectionString).targetSessionAttrs;
  } catch {
    return undefined;
  }
}

/**
 * The hosts a connection chooses from: `hosts` if given, else those of its connection string;
 * and `target_session_attrs` (the option, else the string's, else `primary` for several hosts).
 * Undefined when there is nothing to choose: one host, any server.
 */
export function chooseHosts(options: HostOptions, split: SplitConnectionString | undefined): HostChoice | undefined {
  const hosts = (options.hosts as PglnHost[] | undefined) ?? (split && split.hosts.length > 0 ? split.hosts : undefined);
  const attrs = (options.targetSessionAttrs ?? split?.targetSessionAttrs ?? (hosts && hosts.length > 1 ? 'primary' : 'any')) as PglnTargetSessionAttrs;
  // One host of the connection settings, any server: nothing to choose (a one-entry hosts still names its host).
  if (attrs === 'any' && options.hosts === undefined && (!hosts || hosts.length < 2)) return undefined;
  return { hosts: hosts ?? [], attrs };
}
