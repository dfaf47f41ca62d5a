/** The JSON Schema check (ajv), with ajv's errors translated into plain words. */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { labSpecSchema, schemaPath } from './assets.js';
import { closest, describeValue, list, pathString, pointerSegments, quote, type RawIssue } from './util.js';

let compiled: ValidateFunction | undefined;

export { schemaPath, labSpecSchema };

function validator(): ValidateFunction {
  if (!compiled) {
    // verbose: errors carry the failing (sub)schema, whose properties,
    // bounds and descriptions make the messages
    const ajv = new Ajv({ allErrors: true, verbose: true, strict: true });
    compiled = ajv.compile(labSpecSchema());
  }
  return compiled;
}

/** Structural problems; [] when the document matches the schema. */
export function schemaIssues(value: unknown): RawIssue[] {
  const validate = validator();
  if (validate(value)) return [];
  const out: RawIssue[] = [];
  const seen = new Set<string>();
  for (const e of validate.errors ?? []) {
    const issue = translate(e);
    if (!issue) continue;
    const key = `${pathString(issue.at)}\u0000${issue.message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(issue);
  }
  return out;
}

const TYPE_NAMES: Record<string, string> = {
  string: 'a string',
  integer: 'an integer',
  number: 'a number',
  boolean: 'true or false',
  array: 'a list',
  object: 'an object',
  null: 'null',
};

function describe(schema: unknown): string | undefined {
  const d = (schema as { description?: unknown } | undefined)?.description;
  return typeof d === 'string' ? d : undefined;
}

function translate(e: ErrorObject): RawIssue | undefined {
  const at = pointerSegments(e.instancePath);
  const parent = e.parentSchema as Record<string, unknown> | undefined;
  const params = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'if':
      // the branch that failed has its own errors
      return undefined;
    case 'required': {
      const prop = String(params.missingProperty);
      const props = (parent?.properties ?? {}) as Record<string, unknown>;
      const d = describe(props[prop]);
      return { at: [...at, prop], message: `required property is missing${d ? ` (${d})` : ''}` };
    }
    case 'additionalProperties': {
      const prop = String(params.additionalProperty);
      const allowed = Object.keys((parent?.properties ?? {}) as Record<string, unknown>).filter((k) => k !== '$schema');
      const hint = closest(prop, allowed);
      return {
        at: [...at, prop],
        message: `unknown property ${quote(prop)}${hint ? ` (did you mean ${quote(hint)}?)` : ''}; allowed here: ${list(allowed)}`,
      };
    }
    case 'type': {
      const types = ([] as unknown[]).concat(params.type).map((t) => TYPE_NAMES[String(t)] ?? String(t));
      // a scalar's description says what it holds; a list's or object's would be a paragraph
      const scalar = !['array', 'object'].includes(String(params.type));
      const d = parent?.pattern === undefined ? describe(parent) : undefined;
      // the 'else' of a one-of-two-shapes field: its description names both shapes
      if (d && e.schemaPath.includes('/else/')) return { at, message: `must be ${d}, got ${describeValue(e.data)}` };
      return { at, message: `must be ${types.join(' or ')}${d && scalar ? ` (${d})` : ''}, got ${describeValue(e.data)}` };
    }
    case 'enum': {
      const allowed = ((params.allowedValues ?? []) as unknown[]).map(String);
      const hint = typeof e.data === 'string' ? closest(e.data, allowed) : undefined;
      return {
        at,
        message: `${typeof e.data === 'string' ? quote(e.data) : describeValue(e.data)} is not allowed${hint ? ` (did you mean ${quote(hint)}?)` : ''}; use one of: ${list(allowed)}`,
      };
    }
    case 'pattern': {
      const d = describe(parent);
      return { at, message: `${describeValue(e.data).replace(/^the string /, '')} is not valid: must be ${d ?? `text matching ${String(params.pattern)}`}` };
    }
    case 'minimum':
    case 'maximum': {
      const min = parent?.minimum;
      const max = parent?.maximum;
      const range = typeof min === 'number' && typeof max === 'number' ? `between ${min} and ${max}` : e.keyword === 'minimum' ? `at least ${String(min)}` : `at most ${String(max)}`;
      return { at, message: `must be ${range}, got ${String(e.data)}` };
    }
    case 'minItems':
    case 'maxItems': {
      const min = parent?.minItems;
      const max = parent?.maxItems;
      const n = Array.isArray(e.data) ? e.data.length : 0;
      const what = (k: number): string => `${k} ${k === 1 ? 'entry' : 'entries'}`;
      const want = min !== undefined && min === max ? `exactly ${what(Number(min))}` : e.keyword === 'minItems' ? `at least ${what(Number(min))}` : `at most ${what(Number(max))}`;
      // a fixed-length list's description says what its entries are
      const d = min !== undefined && min === max ? describe(parent) : undefined;
      return { at, message: `must have ${want}${d ? ` (${d})` : ''}, got ${n === 0 ? 'none' : n}` };
    }
    default:
      return { at, message: e.message ?? `fails the schema's ${e.keyword} rule` };
  }
}
