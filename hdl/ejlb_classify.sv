// Stages 1-10 of docs/dataplane.md for one frame header per cycle, fully pipelined (no stalls):
//   S1 parse (ejlb_parser)            S2 destination filter, LB header checks, allow-list and the
//   epoch ranges, all against one snapshot of the active tables (+ the RAM bank)
//   S3 slot -> calendar RAM read      S4 member id -> member RAM read
//   S5 member checks, new port, checksum sums    S6 header rewrite + 16-byte strip -> verdict
//
// LB header fields (lbh from the parser, big-endian: byte 0 in bits 127:120), docs/wire.md:
//
//   Field                        Bits      Use
//   magic "LB"                   127:112   else drop_no_lb_hdr (also: dport outside 16384-32767,
//                                          UDP payload shorter than 16 bytes)
//   version                      111:104   2 or 3, else drop_bad_version
//   next protocol                103:96    not checked
//   v3 slot_select (v2 reserved) 95:80     v3 slot key; ignored in v2
//   port_select (v2 entropy)     79:64     member base port + (it AND (2^port bits - 1))
//   tick                         63:0      epoch range; v2 slot key = tick[15:0]
//
// Rewritten in S6 (docs/dataplane.md, "Rewrite"):
//
//   Field                        Becomes
//   destination / source MAC     member MAC / the LB's MAC
//   IPv4 total length, TTL       - 16 when stripping, TTL - 1
//   IPv4 checksum                incremental update (RFC 1624) over the changed words
//   IPv6 payload length, hops    - 16 when stripping, hop limit - 1
//   IP source / destination      the LB instance's address / the member's address
//   UDP dest port, length        new port, - 16 when stripping
//   UDP checksum                 incremental update; 0 stays 0, a result of 0 becomes 0xFFFF
//   LB header (16 bytes)         removed unless the member keeps it
`resetall
`default_nettype none

import ejlb_regmap_pkg::*;  // file scope: Yosys has no header imports
import ejlb_pkg::*;

module ejlb_classify (
    input  logic                      clk,
    input  logic                      rst,
    input  logic                      in_valid,
    input  logic [HEADER_BYTES*8-1:0] in_hdr,
    input  logic [15:0]               in_seen,
    input  logic                      in_ended,
    // tables
    input  logic [NUM_LBS-1:0][7:0][31:0] lb_act,
    input  logic [NUM_LBS*NUM_EPOCHS-1:0][4:0][31:0] ep_act,
    input  logic [N_SENDERS-1:0][4:0][31:0] snd_act,
    input  logic                      bank,
    output logic [13:0]               cal_addr,
    input  logic [31:0]               cal_data,
    output logic [3+MEMBER_ID_BITS:0] mem_addr,
    input  logic [32*7-1:0]           mem_data,
    // verdict
    output logic                      v_valid,
    output ejlb_pkg::verdict_t        v
);
  // ---------------- S1: parse
  logic p_ok, p_is6;
  logic [15:0] p_need, p_ulen, p_dport, p_ucsum;
  logic [6:0] p_l3, p_udp;
  logic [127:0] p_src, p_dst, p_lbh;
  logic [7:0] p_ttl;
  ejlb_parser #(.HEADER_BYTES(HEADER_BYTES)) parser (
      .hdr(in_hdr), .seen(in_seen), .ended(in_ended), .ok(p_ok), .need_len(p_need), .l3(p_l3),
      .is6(p_is6), .udp(p_udp), .ulen(p_ulen), .src(p_src), .dst(p_dst), .ttl(p_ttl),
      .dport(p_dport), .ucsum(p_ucsum), .lbh(p_lbh));

  typedef struct packed {
    logic ok, is6;
    logic [15:0] need, ulen, dport, ucsum;
    logic [6:0] l3, udp;
    logic [127:0] src, dst, lbh;
    logic [7:0] ttl;
    logic [15:0] ipcsum;
  } parsed_t;

  logic s1_v;
  parsed_t s1;
  logic [HEADER_BYTES*8-1:0] s1_hdr;
  always_ff @(posedge clk) begin
    s1_v <= in_valid && !rst;
    s1.ok <= p_ok;
    s1.is6 <= p_is6;
    s1.need <= p_need;
    s1.ulen <= p_ulen;
    s1.dport <= p_dport;
    s1.ucsum <= p_ucsum;
    s1.l3 <= p_l3;
    s1.udp <= p_udp;
    s1.src <= p_src;
    s1.dst <= p_dst;
    s1.lbh <= p_lbh;
    s1.ttl <= p_ttl;
    s1.ipcsum <= {in_hdr[8*(p_l3+10)+:8], in_hdr[8*(p_l3+11)+:8]};
    s1_hdr <= in_hdr;
  end

  // ---------------- S2: one snapshot of the register tables
  logic [NUM_LBS-1:0] lb_match;
  logic [2:0] lb_sel;
  logic [N_SENDERS-1:0] snd_match;
  logic [NUM_LBS*NUM_EPOCHS-1:0] ep_in, ep_ca;
  logic [63:0] tick;
  always_comb begin
    tick = s1.lbh[63:0];
    for (int i = 0; i < NUM_LBS; i++)
      lb_match[i] = s1.is6 ? lb_act[i][0][LB_V6_VALID_LSB] &&
                             {lb_act[i][LB_W_IP0], lb_act[i][LB_W_IP1], lb_act[i][LB_W_IP2], lb_act[i][LB_W_IP3]} == s1.dst
                           : lb_act[i][0][LB_V4_VALID_LSB] && lb_act[i][LB_W_IPV4] == s1.dst[31:0];
    lb_sel = '0;
    for (int i = NUM_LBS - 1; i >= 0; i--) if (lb_match[i]) lb_sel = 3'(i);  // lowest id wins
    for (int k = 0; k < N_SENDERS; k++)
      snd_match[k] = snd_act[k][0][SENDER_VALID_LSB] && snd_act[k][0][SENDER_V6_LSB] == s1.is6
          && snd_act[k][0][SENDER_LB_LSB+:3] == lb_sel
          && (s1.is6 ? {snd_act[k][1], snd_act[k][2], snd_act[k][3], snd_act[k][4]} == s1.src
                     : snd_act[k][4] == s1.src[31:0]);
    for (int e = 0; e < NUM_LBS * NUM_EPOCHS; e++) begin
      ep_in[e] = ep_act[e][0][EPOCH_VALID_LSB] && tick >= {ep_act[e][EPOCH_W_START_HI], ep_act[e][EPOCH_W_START_LO]}
          && (!ep_act[e][0][EPOCH_BOUNDED_LSB] || tick < {ep_act[e][EPOCH_W_END_HI], ep_act[e][EPOCH_W_END_LO]});
      ep_ca[e] = ep_act[e][0][EPOCH_VALID_LSB] && ep_act[e][0][EPOCH_CATCH_ALL_LSB];
    end
  end

  logic s2_v, s2_lb_hit, s2_allowed, s2_ep_hit, s2_bank;
  parsed_t s2;
  logic [HEADER_BYTES*8-1:0] s2_hdr;
  logic [2:0] s2_lb;
  logic [1:0] s2_ep;
  logic [47:0] s2_lbmac;
  logic [127:0] s2_lbip;
  logic [4:0] s2_slot_bits;
  logic [15:0] s2_slot_xor;
  always_ff @(posedge clk) begin
    logic hit;
    logic [1:0] e_sel;
    s2_v <= s1_v && !rst;
    s2 <= s1;
    s2_hdr <= s1_hdr;
    s2_bank <= bank;
    s2_lb_hit <= |lb_match;
    s2_lb <= lb_sel;
    s2_allowed <= |snd_match;
    // first range that holds the tick, else the catch-all (model: Tables.epoch_for)
    hit = 1'b0;
    e_sel = '0;
    for (int e = NUM_EPOCHS - 1; e >= 0; e--) if (ep_ca[lb_sel*NUM_EPOCHS+e]) begin
      hit = 1'b1;
      e_sel = 2'(e);
    end
    for (int e = NUM_EPOCHS - 1; e >= 0; e--) if (ep_in[lb_sel*NUM_EPOCHS+e]) begin
      hit = 1'b1;
      e_sel = 2'(e);
    end
    s2_ep_hit <= hit;
    s2_ep <= e_sel;
    s2_lbmac <= {lb_act[lb_sel][LB_W_MAC_HI][15:0], lb_act[lb_sel][LB_W_MAC_LO]};
    s2_lbip <= s1.is6 ? {lb_act[lb_sel][LB_W_IP0], lb_act[lb_sel][LB_W_IP1], lb_act[lb_sel][LB_W_IP2],
                         lb_act[lb_sel][LB_W_IP3]} : {96'b0, lb_act[lb_sel][LB_W_IPV4]};
    s2_slot_bits <= lb_act[lb_sel][0][LB_SLOT_BITS_LSB+:5];
    s2_slot_xor <= lb_act[lb_sel][0][LB_SLOT_XOR_LSB+:16];
  end

  // ---------------- S3: verdict so far, slot, calendar read
  logic [3:0] r3;
  logic [7:0] version3;
  logic [15:0] slot3;
  always_comb begin
    version3 = s2.lbh[111:104];
    slot3 = ((version3 == 8'd2 ? s2.lbh[15:0] : s2.lbh[95:80]) ^ s2_slot_xor)
            & 16'((17'd1 << s2_slot_bits) - 17'd1);
    if (!s2.ok) r3 = DROP_PARSE_FAIL;
    else if (!s2_lb_hit) r3 = DROP_NOT_LB;
    else if (s2.dport[15:14] != 2'b01 || s2.ulen < 16'd24 || s2.lbh[127:112] != 16'h4C42) r3 = DROP_NO_LB_HDR;
    else if (version3 != 8'd2 && version3 != 8'd3) r3 = DROP_BAD_VERSION;
    else if (!s2_allowed) r3 = DROP_BLOCKED_SRC;
    else if (s2.ttl <= 8'd1) r3 = DROP_TTL;
    else if (!s2_ep_hit) r3 = DROP_EPOCH_MISS;
    else if (slot3 >= 16'(CALENDAR_SLOTS)) r3 = DROP_CALENDAR_MISS;
    else r3 = DROP_FORWARD;
    cal_addr = {s2_bank, s2_lb, s2_ep, slot3[8:1]};
  end

  logic s3_v, s3_bank, s3_odd;
  parsed_t s3;
  logic [HEADER_BYTES*8-1:0] s3_hdr;
  logic [3:0] s3_reason;
  logic [2:0] s3_lb;
  logic [1:0] s3_ver;
  logic [47:0] s3_lbmac;
  logic [127:0] s3_lbip;
  always_ff @(posedge clk) begin
    s3_v <= s2_v && !rst;
    s3 <= s2;
    s3_hdr <= s2_hdr;
    s3_reason <= r3;
    s3_lb <= s2_lb;
    s3_bank <= s2_bank;
    s3_odd <= slot3[0];
    s3_ver <= (r3 == DROP_FORWARD || r3 > DROP_BAD_VERSION) ? {version3 == 8'd3, version3 == 8'd2} : 2'b00;
    s3_lbmac <= s2_lbmac;
    s3_lbip <= s2_lbip;
  end

  // ---------------- S4: calendar entry -> member read
  logic [15:0] mid4;
  logic [3:0] r4;
  always_comb begin
    mid4 = s3_odd ? cal_data[31:16] : cal_data[15:0];
    r4 = s3_reason;
    if (r4 == DROP_FORWARD && mid4 == 16'hFFFF) r4 = DROP_CALENDAR_MISS;
    else if (r4 == DROP_FORWARD && mid4 >= 16'(1 << MEMBER_ID_BITS)) r4 = DROP_MEMBER_MISS;
    mem_addr = {s3_bank, s3_lb, mid4[MEMBER_ID_BITS-1:0]};
  end

  logic s4_v;
  parsed_t s4;
  logic [HEADER_BYTES*8-1:0] s4_hdr;
  logic [3:0] s4_reason;
  logic [2:0] s4_lb;
  logic [1:0] s4_ver;
  logic [MEMBER_ID_BITS-1:0] s4_mid;
  logic [47:0] s4_lbmac;
  logic [127:0] s4_lbip;
  always_ff @(posedge clk) begin
    s4_v <= s3_v && !rst;
    s4 <= s3;
    s4_hdr <= s3_hdr;
    s4_reason <= r4;
    s4_lb <= s3_lb;
    s4_ver <= s3_ver;
    s4_mid <= mid4[MEMBER_ID_BITS-1:0];
    s4_lbmac <= s3_lbmac;
    s4_lbip <= s3_lbip;
  end

  // a cast would widen `~x` before inverting: invert at 16 bits first
  function automatic logic [15:0] inv16(input logic [15:0] x);
    inv16 = ~x;
  endfunction

  // ---------------- S5: member entry, new port and lengths, checksum sums (RFC 1624 eqn. 3)
  logic [31:0] m_ctrl;
  logic [47:0] m_mac;
  logic [127:0] m_ip;
  logic [3:0] r5;
  logic strip5;
  logic [15:0] dport5, ulen5, port_mask;
  logic [22:0] usum, isum;
  always_comb begin
    m_ctrl = mem_data[31:0];
    m_mac = {mem_data[32*MEMBER_W_MAC_HI+:16], mem_data[32*MEMBER_W_MAC_LO+:32]};
    m_ip = {mem_data[32*MEMBER_W_IP0+:32], mem_data[32*MEMBER_W_IP1+:32], mem_data[32*MEMBER_W_IP2+:32],
            mem_data[32*MEMBER_W_IP3+:32]};
    r5 = s4_reason;
    if (r5 == DROP_FORWARD && (!m_ctrl[MEMBER_VALID_LSB] || m_ctrl[MEMBER_DROP_LSB]
                               || m_ctrl[MEMBER_V6_LSB] != s4.is6))
      r5 = DROP_MEMBER_MISS;
    strip5 = !m_ctrl[MEMBER_KEEP_LB_LSB];
    port_mask = 16'((17'd1 << m_ctrl[MEMBER_PORT_BITS_LSB+:4]) - 17'd1);
    dport5 = m_ctrl[MEMBER_BASE_PORT_LSB+:16] + (s4.lbh[79:64] & port_mask);
    ulen5 = s4.ulen - (strip5 ? 16'd16 : 16'd0);
    // UDP: ~C + sum(~old) + sum(new). IPv4 addresses are zero-extended to 8 words on both sides:
    // each pair adds ~0 + 0 = -0, which leaves a not-all-zero one's-complement sum unchanged.
    usum = 23'(inv16(s4.ucsum)) + 23'(inv16(s4.dport)) + 23'(dport5) + 2 * (23'(inv16(s4.ulen)) + 23'(ulen5));
    for (int k = 0; k < 8; k++)
      usum += 23'(inv16(s4.src[16*k+:16])) + 23'(inv16(s4.dst[16*k+:16])) + 23'(s4_lbip[16*k+:16]) + 23'(m_ip[16*k+:16]);
    if (strip5) for (int k = 0; k < 8; k++) usum += 23'(inv16(s4.lbh[16*k+:16]));
    // IPv4 header (its incoming checksum verified): total length, TTL, source, destination
    isum = 23'(inv16(s4.ipcsum)) + 23'(inv16(s4.ulen + 16'(s4.udp - s4.l3))) + 23'(ulen5 + 16'(s4.udp - s4.l3))
         + 23'(inv16({s4.ttl, 8'd17})) + 23'({s4.ttl - 8'd1, 8'd17});
    for (int k = 0; k < 2; k++)
      isum += 23'(inv16(s4.src[16*k+:16])) + 23'(inv16(s4.dst[16*k+:16])) + 23'(s4_lbip[16*k+:16]) + 23'(m_ip[16*k+:16]);
  end

  function automatic logic [15:0] fold(input logic [22:0] s);
    logic [16:0] a;
    a = 17'(s[15:0]) + 17'(s[22:16]);
    fold = a[15:0] + 16'(a[16]);
  endfunction

  logic s5_v, s5_strip;
  parsed_t s5;
  logic [HEADER_BYTES*8-1:0] s5_hdr;
  logic [3:0] s5_reason;
  logic [2:0] s5_lb;
  logic [1:0] s5_ver;
  logic [MEMBER_ID_BITS-1:0] s5_mid;
  logic [47:0] s5_lbmac, s5_mmac;
  logic [127:0] s5_lbip, s5_mip;
  logic [15:0] s5_dport, s5_ulen, s5_ucsum, s5_icsum;
  always_ff @(posedge clk) begin
    logic [15:0] u;
    s5_v <= s4_v && !rst;
    s5 <= s4;
    s5_hdr <= s4_hdr;
    s5_reason <= r5;
    s5_lb <= s4_lb;
    s5_ver <= s4_ver;
    s5_mid <= s4_mid;
    s5_lbmac <= s4_lbmac;
    s5_lbip <= s4_lbip;
    s5_mmac <= m_mac;
    s5_mip <= m_ip;
    s5_strip <= strip5;
    s5_dport <= dport5;
    s5_ulen <= ulen5;
    u = ~fold(usum);
    s5_ucsum <= s4.ucsum == 16'd0 ? 16'd0 : (u == 16'd0 ? 16'hFFFF : u);
    s5_icsum <= ~fold(isum);
  end

  // ---------------- S6: rewrite the header bytes, strip the LB header, zero past the packet
  logic [HEADER_BYTES*8-1:0] nh;
  logic [OUT_HEADER_BYTES*8-1:0] oh;
  logic [15:0] plen6;  // output packet length before padding
  // IP header rewritten at constant offsets in an aligned copy (l3 is 14 or 18), the UDP header
  // at its variable offset, then both placed back into the captured bytes
  logic [60*8-1:0] nip;
  logic [8*8-1:0] nul;
  always_comb begin
    logic [15:0] tot;
    logic [6:0] pay;
    plen6 = s5.need - (s5_strip ? 16'd16 : 16'd0);
    tot = s5_ulen + 16'(s5.udp - s5.l3);
    pay = s5.udp + 7'd8;
    nip = s5.l3 == 7'd18 ? s5_hdr[8*18+:480] : s5_hdr[8*14+:480];
    if (!s5.is6) begin
      nip[8*2+:16] = {tot[7:0], tot[15:8]};  // byte k at bits 8k: network order is byte-swapped
      nip[8*8+:8] = s5.ttl - 8'd1;
      nip[8*10+:16] = {s5_icsum[7:0], s5_icsum[15:8]};
      for (int k = 0; k < 4; k++) begin
        nip[8*(12+k)+:8] = s5_lbip[8*(3-k)+:8];
        nip[8*(16+k)+:8] = s5_mip[8*(3-k)+:8];
      end
    end else begin
      nip[8*4+:16] = {s5_ulen[7:0], s5_ulen[15:8]};
      nip[8*7+:8] = s5.ttl - 8'd1;
      for (int k = 0; k < 16; k++) begin
        nip[8*(8+k)+:8] = s5_lbip[8*(15-k)+:8];
        nip[8*(24+k)+:8] = s5_mip[8*(15-k)+:8];
      end
    end
    nul = s5_hdr[8*s5.udp+:64];
    nul[8*2+:16] = {s5_dport[7:0], s5_dport[15:8]};
    nul[8*4+:16] = {s5_ulen[7:0], s5_ulen[15:8]};
    nul[8*6+:16] = {s5_ucsum[7:0], s5_ucsum[15:8]};
    nh = s5_hdr;
    for (int k = 0; k < 6; k++) begin
      nh[8*k+:8] = s5_mmac[8*(5-k)+:8];
      nh[8*(6+k)+:8] = s5_lbmac[8*(5-k)+:8];
    end
    if (s5.l3 == 7'd18) nh[8*18+:480] = nip;
    else nh[8*14+:480] = nip;
    nh[8*s5.udp+:64] = nul;
    for (int j = 0; j < OUT_HEADER_BYTES; j++) begin
      if (16'(j) >= plen6) oh[8*j+:8] = 8'd0;
      else if (s5_strip && 7'(j) >= pay) oh[8*j+:8] = nh[8*(j+16)+:8];
      else oh[8*j+:8] = nh[8*j+:8];
    end
  end

  always_ff @(posedge clk) begin
    v_valid <= s5_v && !rst;
    v.reason <= s5_reason;
    v.lb_known <= s5_reason != DROP_PARSE_FAIL && s5_reason != DROP_NOT_LB;
    v.lb <= s5_lb;
    v.member <= 16'(s5_mid);
    v.version <= s5_ver;
    v.strip <= s5_strip && s5_reason == DROP_FORWARD;
    v.len <= plen6 < 16'd60 ? 16'd60 : plen6;
    v.need_len <= s5.need;
    v.hdr <= oh;
  end
endmodule

`resetall
