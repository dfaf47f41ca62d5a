/**
 * commander, loaded as the CommonJS package it is. Its ESM entry
 * (commander/esm.mjs) wraps the same module, but importing CommonJS from ESM
 * makes Node scan index.js for its export names first (cjs-module-lexer):
 * about a third of sharpctl's start-up beyond Node's own, for nothing. The
 * classes are the very same objects either way (one module instance).
 */
import { createRequire } from 'node:module';

const commander = createRequire(import.meta.url)('commander') as typeof import('commander');

export const { Command, Option, CommanderError } = commander;
export type Command = import('commander').Command;
export type Option = import('commander').Option;
export type CommanderError = import('commander').CommanderError;
