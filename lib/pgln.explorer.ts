import { Injectable, Logger } from '@nestjs/common';
import { DiscoveryService, MetadataScanner, Reflector } from '@nestjs/core';
import type { InstanceWrapper } from '@nestjs/core/injector/instance-wrapper.js';
import type { OnNotificationMetadata, OnOutOfSyncMetadata } from './decorators/pgln-metadata.js';
import { PglnOptionsError } from './errors/index.js';
import { DEFAULT_CONNECTION, ON_NOTIFICATION_METADATA, ON_OUT_OF_SYNC_METADATA, PGLN_CONNECTION_NAME } from './pgln.constants.js';
import { DUPLICATE_CONNECTION, REQUEST_SCOPED_HANDLER, UNKNOWN_CONNECTION } from './pgln.messages.js';
import type { SubscriptionSpec } from './pgln.subscription.js';

/** A decorated method found at bootstrap, ready to be subscribed. */
export interface DiscoveredHandler {
  readonly channel: string;
  readonly spec: SubscriptionSpec;
}

/** A decorated method with what the explorer needs to pick and log it. */
interface Found extends DiscoveredHandler {
  readonly connection: string;
  /** `@OnNotification` or `@OnOutOfSync`, for messages. */
  readonly decorator: string;
  /** How the bootstrap log line describes it. */
  readonly kind: string;
}

type Method = (...args: unknown[]) => unknown;

/**
 * Finds `@OnNotification` / `@OnOutOfSync` methods on every provider and controller, for one
 * instance of the module: those bound to its connection name.
 */
@Injectable()
export class PglnExplorer {
  private readonly logger = new Logger('PglnExplorer');

  constructor(
    private readonly discovery: DiscoveryService,
    private readonly scanner: MetadataScanner,
    private readonly reflector: Reflector,
  ) {}

  /**
   * Every decorated method of singleton providers and controllers bound to `connection`, in
   * discovery order; each logged once.
   *
   * @throws PglnOptionsError when a method is bound to a connection that no `PglnModule.forRoot()`
   *   of the application creates (it would never be called), or two instances share a name
   */
  explore(connection: string): DiscoveredHandler[] {
    const providers = this.discovery.getProviders();
    const known = providers.filter((wrapper) => wrapper.token === PGLN_CONNECTION_NAME).map((wrapper) => wrapper.instance as string);
    const twice = known.find((name, index) => known.indexOf(name) !== index);
    // Both would LISTEN and call every handler: each notification handled twice, silently.
    if (twice !== undefined) throw new PglnOptionsError(DUPLICATE_CONNECTION(twice));
    const found = [...providers, ...this.discovery.getControllers()].flatMap((wrapper) => this.exploreWrapper(wrapper, connection));
    const unknown = found.find((handler) => !known.includes(handler.connection));
    if (unknown) {
      const { spec, decorator, channel } = unknown;
      throw new PglnOptionsError(UNKNOWN_CONNECTION(spec.name, `${decorator}(${JSON.stringify(channel)})`, unknown.connection, known));
    }
    const suffix = connection === DEFAULT_CONNECTION ? '' : ` (${connection})`;
    return found
      .filter((handler) => handler.connection === connection)
      .map(({ channel, spec, kind }) => {
        this.logger.log(`${spec.name} {${kind}} -> ${channel}${suffix}`);
        return { channel, spec };
      });
  }

  private exploreWrapper(wrapper: InstanceWrapper, connection: string): Found[] {
    if (wrapper.isAlias) return [];
    const singleton = wrapper.isDependencyTreeStatic() && !wrapper.isTransient;
    const instance = wrapper.instance as Record<string, Method> | undefined;
    // Request-scoped and transient providers have no single instance: read their class instead, to warn.
    const prototype = singleton
      ? instance && (Object.getPrototypeOf(instance) ?? {})
      : (wrapper.metatype as { prototype?: object } | null)?.prototype;
    if (!prototype) return [];

    const found: Found[] = [];
    for (const key of this.scanner.getAllMethodNames(prototype)) {
      const method = (prototype as Record<string, Method>)[key]!;
      const notifications = this.reflector.get<OnNotificationMetadata[] | undefined>(ON_NOTIFICATION_METADATA, method);
      const resyncs = this.reflector.get<OnOutOfSyncMetadata[] | undefined>(ON_OUT_OF_SYNC_METADATA, method);
      if (!notifications && !resyncs) continue;
      const className = (instance?.constructor ?? wrapper.metatype)?.name ?? String(wrapper.name);
      const name = `${className}.${key}`;
      if (!singleton || !instance) {
        // Each instance warns of its own.
        const mine = (entries?: readonly { connection: string }[]) => entries?.some((entry) => entry.connection === connection);
        if (mine(notifications)) this.logger.warn(REQUEST_SCOPED_HANDLER(name, '@OnNotification'));
        if (mine(resyncs)) this.logger.warn(REQUEST_SCOPED_HANDLER(name, '@OnOutOfSync'));
        continue;
      }
      const bound = instance[key]!.bind(instance);
      for (const { channel, connection, json, schema, exactlyOnce } of notifications ?? []) {
        const kind = ['notification', ...(json ? ['json'] : []), ...(schema ? ['schema'] : []), ...(exactlyOnce ? ['exactly once'] : [])].join(', ');
        const spec = { name, owner: instance, json, schema, exactlyOnce, onNotification: bound };
        found.push({ channel, connection, decorator: '@OnNotification', kind, spec });
      }
      for (const { channel, connection } of resyncs ?? []) {
        found.push({ channel, connection, decorator: '@OnOutOfSync', kind: 'out-of-sync', spec: { name, owner: instance, onOutOfSync: bound } });
      }
    }
    return found;
  }
}
