// AXI4-Lite slave -> a simple register bus with one outstanding access at a time.
// Writes: `wr_en` is held until `wr_ready` (the tables stall writes while a commit drains).
// Reads: `rd_en` for one cycle, `rd_data` is taken two cycles later (fixed latency of the
// register file). Unaligned addresses are word-aligned; responses are always OKAY.
//
//   Bus side     Width        Meaning
//   wr_en        1            a write is pending: wr_addr, wr_data; done when wr_ready
//   rd_en        1            one-cycle read strobe for rd_addr; rd_data two cycles later
//   addresses    ADDR_WIDTH   byte addresses of the register map (ejlb_regmap_pkg)
`resetall
`default_nettype none

module ejlb_axil_slave #(
    parameter int ADDR_WIDTH = 19
) (
    input  logic                  clk,
    input  logic                  rst,
    input  logic [ADDR_WIDTH-1:0] s_axil_awaddr,
    input  logic [2:0]            s_axil_awprot,
    input  logic                  s_axil_awvalid,
    output logic                  s_axil_awready,
    input  logic [31:0]           s_axil_wdata,
    input  logic [3:0]            s_axil_wstrb,
    input  logic                  s_axil_wvalid,
    output logic                  s_axil_wready,
    output logic [1:0]            s_axil_bresp,
    output logic                  s_axil_bvalid,
    input  logic                  s_axil_bready,
    input  logic [ADDR_WIDTH-1:0] s_axil_araddr,
    input  logic [2:0]            s_axil_arprot,
    input  logic                  s_axil_arvalid,
    output logic                  s_axil_arready,
    output logic [31:0]           s_axil_rdata,
    output logic [1:0]            s_axil_rresp,
    output logic                  s_axil_rvalid,
    input  logic                  s_axil_rready,
    // register bus
    output logic                  wr_en,
    output logic [ADDR_WIDTH-1:0] wr_addr,
    output logic [31:0]           wr_data,
    input  logic                  wr_ready,
    output logic                  rd_en,
    output logic [ADDR_WIDTH-1:0] rd_addr,
    input  logic [31:0]           rd_data
);
  logic [1:0] rd_wait;  // shift register: read issued 1 / 2 cycles ago
  logic rd_busy;

  assign s_axil_bresp = 2'b00;
  assign s_axil_rresp = 2'b00;
  // accept a write when both address and data are present and nothing is pending
  assign s_axil_awready = s_axil_awvalid && s_axil_wvalid && !wr_en && !s_axil_bvalid;
  assign s_axil_wready = s_axil_awready;
  assign s_axil_arready = s_axil_arvalid && !rd_busy && !s_axil_rvalid;

  always_ff @(posedge clk) begin
    rd_en <= 1'b0;
    rd_wait <= {rd_wait[0], rd_en};
    if (s_axil_awready) begin
      wr_en <= 1'b1;
      wr_addr <= {s_axil_awaddr[ADDR_WIDTH-1:2], 2'b00};
      // partial-word writes are not meaningful for table words: apply the whole word
      wr_data <= s_axil_wdata;
    end else if (wr_en && wr_ready) begin
      wr_en <= 1'b0;
      s_axil_bvalid <= 1'b1;
    end
    if (s_axil_bvalid && s_axil_bready) s_axil_bvalid <= 1'b0;
    if (s_axil_arready) begin
      rd_en <= 1'b1;
      rd_busy <= 1'b1;
      rd_addr <= {s_axil_araddr[ADDR_WIDTH-1:2], 2'b00};
    end
    if (rd_wait[1]) begin
      s_axil_rvalid <= 1'b1;
      s_axil_rdata <= rd_data;
    end
    if (s_axil_rvalid && s_axil_rready) begin
      s_axil_rvalid <= 1'b0;
      rd_busy <= 1'b0;
    end
    if (rst) begin
      wr_en <= 1'b0;
      rd_en <= 1'b0;
      rd_busy <= 1'b0;
      rd_wait <= '0;
      s_axil_bvalid <= 1'b0;
      s_axil_rvalid <= 1'b0;
    end
  end
endmodule

`resetall
