// Stage 1 (combinational): Ethernet (+ one 802.1Q tag), IPv4 (options) / IPv6, UDP and the LB
// header fields from the first HEADER_BYTES bytes of a frame. Every check of the reference model's parse()
// except "the frame holds the whole IP packet" when the frame is longer than what was captured:
// `need_len` goes with the frame and the egress checks it against the real length at its end.
//
// Frame fields (l3 = 14, or 18 behind one 802.1Q tag; u = l3 + IHL*4 (IPv4) or l3 + 40 (IPv6)):
//
//   Field                   Offset      Bytes   Checked here                         Output
//   destination, source MAC 0, 6        6, 6    -
//   802.1Q TPID, TCI        12, 14      2, 2    TPID 0x8100: a tag is present         l3 = 18
//   ethertype               12 (16)     2       0x0800 IPv4 or 0x86DD IPv6           is6
//   IPv4 version, IHL       l3          1       version 4, IHL >= 5
//   IPv4 total length       l3 + 2      2       >= IHL*4 + 8                         need_len
//   IPv4 flags, fragment    l3 + 6      2       MF 0, offset 0 (no fragments)
//   IPv4 TTL, protocol      l3 + 8, +9  1, 1    protocol 17 (UDP)                    ttl
//   IPv4 header checksum    l3 + 10     2       verifies over IHL*4 bytes
//   IPv4 source, dest       l3 + 12,+16 4, 4    -                                    src, dst (low 32 bits)
//   IPv6 version            l3          4 bits  6
//   IPv6 payload length     l3 + 4      2       >= 8                                 need_len
//   IPv6 next header, hops  l3 + 6, +7  1, 1    next header 17 (no extension headers) ttl
//   IPv6 source, dest       l3 + 8,+24  16, 16  -                                    src, dst
//   UDP dest port           u + 2       2       -                                    dport
//   UDP length              u + 4       2       == IP payload length                 ulen
//   UDP checksum            u + 6       2       -                                    ucsum
//   LB header               u + 8       16      - (the classifier checks it)         lbh
`resetall
`default_nettype none

module ejlb_parser #(
    parameter int HEADER_BYTES = 104  // captured header bytes (>= 18 + 60 + 8 + 16)
) (
    input  logic [HEADER_BYTES*8-1:0] hdr,      // frame byte k at hdr[8k+:8], zero past the frame
    input  logic [15:0]     seen,     // frame bytes captured (== frame length when `ended`)
    input  logic            ended,    // the whole frame is in `hdr`
    output logic            ok,
    output logic [15:0]     need_len, // the frame must be at least this long (l3 + IP total length)
    output logic [6:0]      l3,
    output logic            is6,
    output logic [6:0]      udp,      // UDP header offset
    output logic [15:0]     ulen,     // UDP length (== IP payload length when ok)
    output logic [127:0]    src,      // IPv4 in the low 32 bits
    output logic [127:0]    dst,
    output logic [7:0]      ttl,
    output logic [15:0]     dport,
    output logic [15:0]     ucsum,
    output logic [127:0]    lbh       // the 16 LB-header bytes, big-endian (byte 0 in bits 127:120)
);
  // Fields are read at constant offsets from two aligned copies: the IP header (l3 is 14 or 18,
  // a 2-way mux) and the 24 bytes of UDP + LB header (one variable shift), which keeps the logic
  // small in synthesis.
  localparam int IPB = 60, ULB = 24;
  logic [IPB*8-1:0] ip;
  logic [ULB*8-1:0] ul;
`define EJLB_IB(k) ip[8*(k)+:8]
`define EJLB_IW(k) {ip[8*(k)+:8], ip[8*((k)+1)+:8]}
`define EJLB_UW(k) {ul[8*(k)+:8], ul[8*((k)+1)+:8]}
  // 16 frame bytes (byte 0 in the low lane) -> a big-endian 128-bit value
  function automatic logic [127:0] be128(input logic [127:0] x);
    for (int i = 0; i < 16; i++) be128[8*i+:8] = x[8*(15-i)+:8];
  endfunction

  logic [15:0] etype, frag;
  logic [16:0] total, need;  // 17 bits: an IPv6 payload length near 64 KiB must not wrap
  logic [5:0] hlen;
  logic [20:0] acc;
  logic [16:0] fold;
  logic [15:0] hsum;
  logic len_ok, v4ok, v6ok;

  always_comb begin
    etype = {hdr[8*12+:8], hdr[8*13+:8]};
    l3 = 7'd14;
    ip = hdr[8*14+:IPB*8];
    if (etype == 16'h8100) begin
      l3 = 7'd18;
      etype = {hdr[8*16+:8], hdr[8*17+:8]};
      ip = hdr[8*18+:IPB*8];
    end
    is6 = etype == 16'h86DD;
    hlen = is6 ? 6'd40 : {`EJLB_IB(0)[3:0], 2'b00};
    total = is6 ? 17'(`EJLB_IW(4)) + 17'd40 : 17'(`EJLB_IW(2));
    udp = l3 + 7'(hlen);
    ul = hdr[8*udp+:ULB*8];
    need = 17'(l3) + total;
    need_len = need[16] ? 16'hFFFF : need[15:0];
    dport = `EJLB_UW(2);
    ulen = `EJLB_UW(4);
    ucsum = `EJLB_UW(6);
    lbh = be128(ul[8*8+:128]);
    frag = `EJLB_IW(6);

    // IPv4 header checksum over IHL*4 bytes (IHL <= 15): one's-complement sum must be 0xFFFF
    acc = '0;
    for (int k = 0; k < IPB / 2; k++) if (k < int'(hlen) / 2) acc = acc + 21'(`EJLB_IW(2 * k));
    fold = 17'(acc[15:0]) + 17'(acc[20:16]);
    hsum = fold[15:0] + 16'(fold[16]);

    if (is6) begin
      src = be128(ip[8*8+:128]);
      dst = be128(ip[8*24+:128]);
      ttl = `EJLB_IB(7);
    end else begin
      src = {96'b0, `EJLB_IW(12), `EJLB_IW(14)};
      dst = {96'b0, `EJLB_IW(16), `EJLB_IW(18)};
      ttl = `EJLB_IB(8);
    end

    // when the frame ended inside the capture, len_ok also guarantees that every byte read exists
    len_ok = !need[16] && (!ended || 17'(seen) >= need);
    v4ok = etype == 16'h0800 && `EJLB_IB(0)[7:4] == 4'd4 && hlen >= 6'd20
        && total >= 17'(hlen) + 17'd8 && hsum == 16'hFFFF && frag[13:0] == 14'd0 && `EJLB_IB(9) == 8'd17;
    v6ok = is6 && `EJLB_IB(0)[7:4] == 4'd6 && `EJLB_IW(4) >= 16'd8 && `EJLB_IB(6) == 8'd17;
    ok = (v4ok || v6ok) && len_ok && 17'(ulen) == total - 17'(hlen);
  end
endmodule
`undef EJLB_IB
`undef EJLB_IW
`undef EJLB_UW

`resetall
