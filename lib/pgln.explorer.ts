import { Injectable, Logger } from '@nestjs/common';
import { DiscoveryService, MetadataScanner, Reflector } from '@nestjs/core';
import type { InstanceWrapper } from '@nestjs/core/injector/instance-wrapper.js';
import type { OnNotificationMetadata, OnOutOfSyncMetadata } from './decorators/pgln-metadata.js';
import { ON_NOTIFICATION_METADATA, ON_OUT_OF_SYNC_METADATA } from './pgln.constants.js';
import { REQUEST_SCOPED_HANDLER } from './pgln.messages.js';
import type { SubscriptionSpec } from './pgln.subscription.js';

/** A decorated method found at bootstrap, ready to be subscribed. */
export interface DiscoveredHandler {
  readonly channel: string;
  readonly spec: SubscriptionSpec;
}

type Method = (...args: unknown[]) => unknown;

/** Finds `@OnNotification` / `@OnOutOfSync` methods on every provider and controller. */
@Injectable()
export class PglnExplorer {
  private readonly logger = new Logger('PglnExplorer');

  constructor(
    private readonly discovery: DiscoveryService,
    private readonly scanner: MetadataScanner,
    private readonly reflector: Reflector,
  ) {}

  /** Every decorated method of singleton providers and controllers, in discovery order; each logged once. */
  explore(): DiscoveredHandler[] {
    const wrappers = [...this.discovery.getProviders(), ...this.discovery.getControllers()];
    return wrappers.flatMap((wrapper) => this.exploreWrapper(wrapper));
  }

  private exploreWrapper(wrapper: InstanceWrapper): DiscoveredHandler[] {
    if (wrapper.isAlias) return [];
    const singleton = wrapper.isDependencyTreeStatic() && !wrapper.isTransient;
    const instance = wrapper.instance as Record<string, Method> | undefined;
    // Request-scoped and transient providers have no single instance: read their class instead, to warn.
    const prototype = singleton
      ? instance && (Object.getPrototypeOf(instance) ?? {})
      : (wrapper.metatype as { prototype?: object } | null)?.prototype;
    if (!prototype) return [];

    const found: DiscoveredHandler[] = [];
    for (const key of this.scanner.getAllMethodNames(prototype)) {
      const method = (prototype as Record<string, Method>)[key]!;
      const notifications = this.reflector.get<OnNotificationMetadata[] | undefined>(ON_NOTIFICATION_METADATA, method);
      const resyncs = this.reflector.get<OnOutOfSyncMetadata[] | undefined>(ON_OUT_OF_SYNC_METADATA, method);
      if (!notifications && !resyncs) continue;
      const className = (instance?.constructor ?? wrapper.metatype)?.name ?? String(wrapper.name);
      const name = `${className}.${key}`;
      if (!singleton || !instance) {
        if (notifications) this.logger.warn(REQUEST_SCOPED_HANDLER(name, '@OnNotification'));
        if (resyncs) this.logger.warn(REQUEST_SCOPED_HANDLER(name, '@OnOutOfSync'));
        continue;
      }
      const bound = instance[key]!.bind(instance);
      for (const { channel, json, schema } of notifications ?? []) {
        found.push({ channel, spec: { name, owner: instance, json, schema, onNotification: bound } });
        const kind = schema ? ', json, schema' : json ? ', json' : '';
        this.logger.log(`${name} {notification${kind}} -> ${channel}`);
      }
      for (const { channel } of resyncs ?? []) {
        found.push({ channel, spec: { name, owner: instance, onOutOfSync: bound } });
        this.logger.log(`${name} {out-of-sync} -> ${channel}`);
      }
    }
    return found;
  }
}
