// A program the verifier rejects yields a VerifierError with the kernel's reason.
import t from 'tap';
import { BpfObjectSpec, VerifierError, openHandleCount } from '../../src/bpf/index.js';
import { testObject } from '../helpers/env.js';

t.test('rejected program: typed error with the verifier log', async (t) => {
  const before = openHandleCount();
  const spec = BpfObjectSpec.open(testObject('rejected'));
  let caught: unknown;
  try {
    spec.load();
  } catch (e) {
    caught = e;
  }
  t.ok(caught instanceof VerifierError, 'a VerifierError');
  const err = caught as VerifierError;
  t.equal(err.code, 'EACCES', 'the kernel answered EACCES');
  t.match(err.message, /invalid access to packet/, "the message carries the verifier's reason");
  t.ok(err.logLines.some((l) => /R\d/.test(l)), 'the whole log is kept, register states included');
  t.equal(openHandleCount(), before, 'the failed load left no open handle');
});

t.test('a missing object file is a clear error', async (t) => {
  t.throws(() => BpfObjectSpec.open('/nonexistent/x.bpf.o'), { name: 'BpfError', code: 'ENOENT', message: /cannot open BPF object \/nonexistent\/x\.bpf\.o/ });
});
