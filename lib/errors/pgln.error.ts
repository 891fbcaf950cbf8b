/** Base class of every error nestjs-pgln throws, so `instanceof PglnError` catches them all. */
export class PglnError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}
