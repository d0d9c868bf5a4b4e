/****************************************************************************
 * fpgaslim: hand-written RTL for FINN layers that finn-plus 1.6.1 ships only
 * as HLS on Zynq-7000 / UltraScale+ parts (SPDX-License-Identifier: BSD-3-Clause)
 *
 * @brief	DuplicateStreams: every input word is copied to N_OUT output
 *		streams (FINN's DuplicateStreams op, finn-hlslib StreamingDup).
 *		Each output has its own skid buffer, so the outputs drain
 *		independently; a word is taken only when every output can take
 *		it, and the input ready is a register.
 ***************************************************************************/

module fpgaslim_dup_streams #(
	int unsigned  DATA_WIDTH = 8,
	int unsigned  N_OUT = 2
)(
	input	logic  clk,
	input	logic  rst,

	input	logic [DATA_WIDTH-1:0]  idat,
	input	logic  ivld,
	output	logic  irdy,

	output	logic [N_OUT-1:0][DATA_WIDTH-1:0]  odat,
	output	logic [N_OUT-1:0]  ovld,
	input	logic [N_OUT-1:0]  ordy
);

	uwire [N_OUT-1:0]  srdy;
	assign	irdy = &srdy;
	uwire  take = ivld && irdy;

	for(genvar  i = 0; i < N_OUT; i++) begin : genOut
		fpgaslim_skid #(.DATA_WIDTH(DATA_WIDTH)) obuf (
			.clk, .rst,
			.idat, .ivld(take), .irdy(srdy[i]),
			.odat(odat[i]), .ovld(ovld[i]), .ordy(ordy[i])
		);
	end : genOut

endmodule : fpgaslim_dup_streams
