/****************************************************************************
 * fpgaslim: hand-written RTL for FINN layers that finn-plus 1.6.1 ships only
 * as HLS on Zynq-7000 / UltraScale+ parts (SPDX-License-Identifier: BSD-3-Clause)
 *
 * @brief	Two-entry skid buffer: an AXI-stream register slice whose input
 *		ready is a register (no combinational path from ordy to irdy)
 *		and which passes one word per cycle without backpressure.
 *		The output register A carries the stream; B holds the one word
 *		that arrives in the cycle the output stalls.
 ***************************************************************************/

module fpgaslim_skid #(
	int unsigned  DATA_WIDTH = 8
)(
	input	logic  clk,
	input	logic  rst,

	input	logic [DATA_WIDTH-1:0]  idat,
	input	logic  ivld,
	output	logic  irdy,

	output	logic [DATA_WIDTH-1:0]  odat,
	output	logic  ovld,
	input	logic  ordy
);

	logic [DATA_WIDTH-1:0]  A;
	logic [DATA_WIDTH-1:0]  B;
	logic  AVld = 0;
	logic  BVld = 0;

	always_ff @(posedge clk) begin
		if(rst) begin
			AVld <= 0;
			BVld <= 0;
		end
		else if(!AVld || ordy) begin	// the output register moves
			if(BVld) begin
				A <= B;
				AVld <= 1;
				BVld <= 0;
			end
			else begin
				AVld <= ivld;
				if(ivld)  A <= idat;
			end
		end
		else if(ivld && !BVld) begin	// output stalled: park the word in B
			B <= idat;
			BVld <= 1;
		end
	end

	assign	irdy = !BVld;
	assign	odat = A;
	assign	ovld = AVld;

endmodule : fpgaslim_skid
