/** The node daemon's secure transport: certificates, the mTLS / Unix-socket server, the controller's channel. */
export * from './errors.js';
export * from './identity.js';
export * from './certs.js';
export * from './server.js';
export * from './client.js';
