/** The certificates' defaults, in a module of their own: the CLI's help shows them without loading the transport (gRPC). */
export const DEFAULT_CA_NAME = 'sharp-ca';
export const DEFAULT_CA_DAYS = 3650;
export const DEFAULT_LEAF_DAYS = 825;
