// ipv4Number: dotted decimal to a host-order number, parsed in place; anything
// else goes to the general parse, which accepts it or names the address.
import t from 'tap';
import { ipv4Number } from '../../src/net/frame.js';

t.test('canonical addresses', async (t) => {
  t.equal(ipv4Number('10.0.0.1'), 0x0a000001);
  t.equal(ipv4Number('0.0.0.0'), 0);
  t.equal(ipv4Number('255.255.255.255'), 0xffffffff, 'unsigned');
  t.equal(ipv4Number('192.168.1.200'), 0xc0a801c8);
  t.equal(ipv4Number('010.001.0.1'), 0x0a010001, 'leading zeros are decimal, as before');
});

t.test('what is not an address is refused, naming it', async (t) => {
  for (const bad of ['256.0.0.1', '1.2.3', '1.2.3.4.5', '1.2.3.999', 'a.b.c.d', '', '1.2.3.4/24', '1234.1.1.1'])
    t.throws(() => ipv4Number(bad), { name: 'RangeError', message: `not an IPv4 address: ${bad}` }, `'${bad}'`);
});
