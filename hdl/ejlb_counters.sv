// 64-bit counters, one update per cycle from the egress (one event per frame), read through the
// register bus. Reading a counter's LO word latches its HI word, so LO-then-HI is never torn.
import ejlb_regmap_pkg::*;  // file scope: Yosys has no header imports

module ejlb_counters
(
    input  logic                      clk,
    input  logic                      rst,
    input  logic                      ev_valid,
    input  logic [3:0]                ev_reason,   // ejlb_regmap_pkg::DROP_*
    input  logic                      ev_lb_known,
    input  logic [2:0]                ev_lb,
    input  logic [MEMBER_ID_BITS-1:0] ev_member,
    input  logic [1:0]                ev_version,  // 2'b01: v2, 2'b10: v3, 0: not passed stage 3
    input  logic [15:0]               ev_rx_bytes,
    input  logic [15:0]               ev_tx_bytes,
    output logic                      ready,      // member counters cleared after reset
    input  logic                      rd_en,
    input  logic [ADDR_WIDTH-1:0]     rd_addr,
    output logic [31:0]               rd_data
);
  localparam int NM = NUM_LBS << MEMBER_ID_BITS;
  logic [63:0] gcnt[N_GLOBAL_COUNTERS];
  logic [63:0] lbcnt[NUM_LBS][N_LB_COUNTERS];
  logic [63:0] m_pkts[NM];
  logic [63:0] m_bytes[NM];
  logic [31:0] hi_latch;

  wire [MEMBER_ID_BITS+2:0] midx = {ev_lb, ev_member};

  // the member counters are RAM: after reset, clear one entry per cycle (NM cycles) while the
  // data path is held off through `ready`
  logic [MEMBER_ID_BITS+3:0] clr;
  assign ready = clr[MEMBER_ID_BITS+3];
  always_ff @(posedge clk) begin
    if (rst) clr <= '0;
    else if (!ready) clr <= clr + 1'b1;
  end

  always_ff @(posedge clk) begin
    if (!ready) begin
      m_pkts[clr[MEMBER_ID_BITS+2:0]] <= '0;
      m_bytes[clr[MEMBER_ID_BITS+2:0]] <= '0;
    end
    if (ev_valid) begin
      if (!ev_lb_known) begin
        gcnt[ev_reason == DROP_PARSE_FAIL ? GCNT_DROP_PARSE_FAIL : GCNT_DROP_NOT_LB] <=
            gcnt[ev_reason == DROP_PARSE_FAIL ? GCNT_DROP_PARSE_FAIL : GCNT_DROP_NOT_LB] + 1;
      end else begin
        lbcnt[ev_lb][LBCNT_RX_PACKETS] <= lbcnt[ev_lb][LBCNT_RX_PACKETS] + 1;
        lbcnt[ev_lb][LBCNT_RX_BYTES] <= lbcnt[ev_lb][LBCNT_RX_BYTES] + 64'(ev_rx_bytes);
        if (ev_version[0]) lbcnt[ev_lb][LBCNT_RX_V2] <= lbcnt[ev_lb][LBCNT_RX_V2] + 1;
        if (ev_version[1]) lbcnt[ev_lb][LBCNT_RX_V3] <= lbcnt[ev_lb][LBCNT_RX_V3] + 1;
        if (ev_reason != DROP_FORWARD) begin
          // LB counters after the rx ones follow the drop codes from NO_LB_HDR on
          lbcnt[ev_lb][LBCNT_DROP_NO_LB_HDR + int'(ev_reason - DROP_NO_LB_HDR)] <=
              lbcnt[ev_lb][LBCNT_DROP_NO_LB_HDR + int'(ev_reason - DROP_NO_LB_HDR)] + 1;
        end else if (ready) begin
          m_pkts[midx] <= m_pkts[midx] + 1;
          m_bytes[midx] <= m_bytes[midx] + 64'(ev_tx_bytes);
        end
      end
    end
    if (rst) begin
      for (int i = 0; i < N_GLOBAL_COUNTERS; i++) gcnt[i] <= '0;
      for (int i = 0; i < NUM_LBS; i++) for (int c = 0; c < N_LB_COUNTERS; c++) lbcnt[i][c] <= '0;
    end
  end

  // reads
  logic [63:0] val;
  wire [31:0] ra = 32'(rd_addr);
  logic hi;
  always_comb begin
    val = '0;
    hi = rd_addr[2];
    if (ra >= (GLOBAL_CNT_BASE) && ra < (GLOBAL_CNT_BASE + 8 * N_GLOBAL_COUNTERS))
      val = gcnt[rd_addr[3]];
    else if (ra >= (LB_CNT_BASE) && ra < (LB_CNT_BASE + LB_CNT_STRIDE * LB_CNT_COUNT)
             && rd_addr[6:3] < N_LB_COUNTERS)
      val = lbcnt[rd_addr[9:7]][rd_addr[6:3]];
    else if (ra >= (MEMBER_CNT_BASE) && ra < (MEMBER_CNT_BASE + MEMBER_CNT_STRIDE * MEMBER_CNT_COUNT))
      val = rd_addr[3] ? m_bytes[rd_addr[MEMBER_ID_BITS+6:4]] : m_pkts[rd_addr[MEMBER_ID_BITS+6:4]];
  end
  always_ff @(posedge clk) begin
    if (rd_en) begin
      rd_data <= hi ? hi_latch : val[31:0];
      if (!hi) hi_latch <= val[63:32];
    end
  end
endmodule
